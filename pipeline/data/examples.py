"""Small example data sets for the multi-label and regression tasks, made from scikit-learn's
bundled 8x8 digits (nothing is downloaded), written as PNG files plus the table that
`data=table` reads (`labels.csv`, its default name):

- multilabel: a 16x16 canvas of 2x2 cells of 8x8; 0 to 3 of the cells hold a digit of
  classes 0-4 (distinct digits, so an image's label set has as many labels as digits), the
  others stay blank. `labels.csv`: path,label,group, the label being the digits present,
  sorted and joined by ";" (an empty cell when the image holds none).
- regression: one digit at a random place on a 32x32 canvas; the targets are the centre of
  its 8x8 box in pixels from the top-left corner, pixel i spanning [i, i+1) (fastai's
  head-pose lesson asks for a point the same way). `labels.csv`: path,x,y,group.

Every pixel gets mild uniform noise (0..NOISE): without it every empty multi-label image would
be byte-identical, and ingest keeps one copy of identical files.

Leakage: the `group` column names the source digits an image drew from, so that `split=group`
keeps every source digit inside one split. Multi-label images reuse source digits (1,797
digits, about 1.7 per image), so the source digits are dealt into POOLS disjoint pools, an
image draws only from its pool, and its group is the pool. A regression image holds one
digit, each source digit used once before any is reused: its group is that digit's row in
scikit-learn's array, so up to 1,797 images every group holds one image.

The same task, size and seed give the same files, byte for byte.

    python -m pipeline.data.examples --task multilabel|regression --out DIR [--images N] [--seed S]
"""

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.core.errors import StagewiseError
from pipeline.data.sources import digits_items

TASKS = ("multilabel", "regression")
TABLE = "labels.csv"  # conf/data/table.yaml's default data.table under data.root
# What each task needs besides data=table data.root=<the folder>.
OVERRIDES = {"multilabel": [], "regression": ["'data.targets=[x,y]'"]}
DEFAULT_IMAGES = 1500
CELL = 8  # scikit-learn's digits are 8x8
NOISE = 16  # the largest noise value added to a pixel (0..255 scale)
LABEL_DELIMITER = ";"

MULTILABEL_CLASSES = (0, 1, 2, 3, 4)
GRID = 2  # cells per side of a multi-label canvas
# How often an image holds 0, 1, 2 or 3 digits.
DIGIT_COUNT_SHARES = (0.15, 0.3, 0.3, 0.25)
POOLS = 40  # disjoint pools of source digits = the multi-label groups

REGRESSION_SIZE = 32  # side of a regression canvas, in pixels


@dataclass(frozen=True)
class Example:
    image: np.ndarray  # H x W uint8 (greyscale)
    cells: dict[str, str | float]  # the table's cells besides path


@dataclass(frozen=True)
class SourceDigits:
    pixels: np.ndarray  # N x 8 x 8 uint8, stretched to 0..255 as the digits source does
    targets: np.ndarray  # N digit classes


def source_digits() -> SourceDigits:
    items = digits_items()
    return SourceDigits(
        pixels=np.stack([item.pixels for item in items]),
        targets=np.array([int(item.label) for item in items]),
    )


def with_noise(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.integers(0, NOISE + 1, size=canvas.shape)
    return np.minimum(canvas.astype(np.int16) + noise, 255).astype(np.uint8)


def multilabel_pools(digits: SourceDigits, rng: np.random.Generator) -> list[dict[int, np.ndarray]]:
    """POOLS disjoint sets of source rows, each with about the same number of every class."""
    dealt = {
        cls: np.array_split(rng.permutation(np.flatnonzero(digits.targets == cls)), POOLS)
        for cls in MULTILABEL_CLASSES
    }
    return [{cls: dealt[cls][pool] for cls in MULTILABEL_CLASSES} for pool in range(POOLS)]


def multilabel_examples(n: int, digits: SourceDigits, rng: np.random.Generator) -> list[Example]:
    pools = multilabel_pools(digits, rng)
    examples = []
    for i in range(n):
        pool = pools[i % POOLS]
        count = rng.choice(len(DIGIT_COUNT_SHARES), p=DIGIT_COUNT_SHARES)
        classes = sorted(int(c) for c in rng.choice(MULTILABEL_CLASSES, count, replace=False))
        cells = rng.choice(GRID * GRID, count, replace=False)
        canvas = np.zeros((GRID * CELL, GRID * CELL), np.uint8)
        for cls, cell in zip(classes, cells, strict=True):
            top, left = (CELL * k for k in divmod(int(cell), GRID))
            canvas[top : top + CELL, left : left + CELL] = digits.pixels[rng.choice(pool[cls])]
        cells = {"label": LABEL_DELIMITER.join(map(str, classes)), "group": f"pool-{i % POOLS:02d}"}
        examples.append(Example(with_noise(canvas, rng), cells))
    return examples


def regression_examples(n: int, digits: SourceDigits, rng: np.random.Generator) -> list[Example]:
    order = rng.permutation(len(digits.pixels))
    examples = []
    for i in range(n):
        source = int(order[i % len(order)])
        left, top = (int(v) for v in rng.integers(0, REGRESSION_SIZE - CELL + 1, size=2))
        canvas = np.zeros((REGRESSION_SIZE, REGRESSION_SIZE), np.uint8)
        canvas[top : top + CELL, left : left + CELL] = digits.pixels[source]
        cells = {"x": left + CELL / 2, "y": top + CELL / 2, "group": f"digit-{source:04d}"}
        examples.append(Example(with_noise(canvas, rng), cells))
    return examples


GENERATORS: dict[str, Callable[[int, SourceDigits, np.random.Generator], list[Example]]] = {
    "multilabel": multilabel_examples,
    "regression": regression_examples,
}


def make_examples(task: str, images: int, seed: int) -> list[Example]:
    """`images` examples of the task, the same for the same seed."""
    if task not in GENERATORS:
        raise StagewiseError(f"task={task}: no example data for it; use one of {', '.join(TASKS)}")
    if images < 1:
        raise StagewiseError(f"--images={images}: must be at least 1")
    return GENERATORS[task](images, source_digits(), np.random.default_rng(seed))


def write_examples(task: str, out: Path, images: int = DEFAULT_IMAGES, seed: int = 0) -> Path:
    """Write out/images/NNNNN.png and the task's table (paths relative to out); returns the
    table's path; use the folder with `data=table data.root=<out>`."""
    examples = make_examples(task, images, seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, example in enumerate(examples):
        path = f"images/{i:05d}.png"
        Image.fromarray(example.image).save(out / path)
        rows.append({"path": path, **example.cells})
    table = out / TABLE
    pd.DataFrame(rows).to_csv(table, index=False, lineterminator="\n")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        table = write_examples(args.task, args.out, args.images, args.seed)
    except StagewiseError as e:
        raise SystemExit(f"error: {e}") from None
    use = " ".join(
        [f"task={args.task}", "data=table", f"data.root={args.out}", *OVERRIDES[args.task]]
    )
    print(f"wrote {args.images} images and {table}; use: {use}")


if __name__ == "__main__":
    main()
