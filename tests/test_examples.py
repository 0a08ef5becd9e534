"""The example multi-label and regression data sets: the table says what the PNG files show
(each digit is identified from the pixels alone, against scikit-learn's digits), the group
column keeps every source digit in one group, and a seed gives the same bytes."""

from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.data import examples
from pipeline.data.examples import CELL, GRID, NOISE, main, source_digits, write_examples


@pytest.fixture(scope="module")
def digits():
    return source_digits()


def read(folder: Path, task: str) -> pd.DataFrame:
    return pd.read_csv(folder / examples.TABLE, dtype=str, keep_default_na=False)


def pixels(folder: Path, path: str) -> np.ndarray:
    with Image.open(folder / path) as image:
        assert image.mode == "L"
        return np.asarray(image)


def sources_shown(window: np.ndarray, digits) -> np.ndarray:
    """Rows of scikit-learn's digits that this 8x8 window is, up to the added noise
    (0..NOISE, clipped at 255)."""
    difference = window.astype(np.int16) - digits.pixels.astype(np.int16)
    return np.flatnonzero(((difference >= 0) & (difference <= NOISE)).all(axis=(1, 2)))


def blank(window: np.ndarray) -> bool:
    return bool((window <= NOISE).all())


def test_multilabel_labels_are_the_digits_drawn_and_sources_stay_in_their_group(tmp_path, digits):
    write_examples("multilabel", tmp_path, images=240, seed=3)
    table = read(tmp_path, "multilabel")
    assert list(table.columns) == ["path", "label", "group"]
    assert len(table) == 240
    groups_of_source, images_of_source = defaultdict(set), defaultdict(int)
    for row in table.itertuples():
        image = pixels(tmp_path, row.path)
        assert image.shape == (GRID * CELL, GRID * CELL)
        shown = []
        for top in range(0, GRID * CELL, CELL):
            for left in range(0, GRID * CELL, CELL):
                window = image[top : top + CELL, left : left + CELL]
                if blank(window):
                    continue
                sources = sources_shown(window, digits)
                assert len(sources) > 0, (row.path, top, left)
                assert len(set(digits.targets[sources])) == 1
                shown.append(int(digits.targets[sources[0]]))
                if len(sources) == 1:
                    groups_of_source[int(sources[0])].add(row.group)
                    images_of_source[int(sources[0])] += 1
        assert row.label == ";".join(str(d) for d in sorted(shown)), row.path
    labels = table["label"]
    assert (labels == "").sum() > 10  # "none of these" images occur
    assert labels.str.count(";").max() == 2  # up to three digits
    assert set(";".join(labels).replace(";", "")) == set("01234")
    assert sum(count > 1 for count in images_of_source.values()) > 10  # digits are reused...
    assert all(len(groups) == 1 for groups in groups_of_source.values())  # ...in one group


def test_regression_targets_are_the_centre_of_the_ink(tmp_path, digits):
    write_examples("regression", tmp_path, images=150, seed=4)
    table = read(tmp_path, "regression")
    assert list(table.columns) == ["path", "x", "y", "group"]
    for row in table.itertuples():
        image = pixels(tmp_path, row.path)
        assert image.shape == (examples.REGRESSION_SIZE,) * 2
        left, top = int(float(row.x)) - CELL // 2, int(float(row.y)) - CELL // 2
        box = image[top : top + CELL, left : left + CELL]
        sources = sources_shown(box, digits)
        assert [f"digit-{source:04d}" for source in sources] == [row.group]
        outside = image.copy()
        outside[top : top + CELL, left : left + CELL] = 0
        assert blank(outside), row.path  # all the ink is in the box around (x, y)
    assert table["group"].is_unique  # each source digit once (150 < 1797)
    assert table["x"].nunique() > 10 and table["y"].nunique() > 10


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.*")}


@pytest.mark.parametrize("task", examples.TASKS)
def test_same_seed_same_bytes(tmp_path, task):
    for name, seed in [("a", 7), ("b", 7), ("c", 8)]:
        main(["--task", task, "--out", str(tmp_path / name), "--images", "30", "--seed", str(seed)])
    first, again, other = (folder_bytes(tmp_path / name) for name in "abc")
    assert len(first) == 31 and first == again
    assert first.keys() == other.keys() and first != other


def test_cli_refuses_no_images(tmp_path):
    with pytest.raises(SystemExit, match="--images=0: must be at least 1"):
        main(["--task", "regression", "--out", str(tmp_path), "--images", "0"])
