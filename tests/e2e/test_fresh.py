"""Fresh projects through every stage: a second run from scratch reproduces the first
(data hashes and metrics), and a user's own folder of photos works end to end."""

import numpy as np
import pytest

from tests.project import (
    ALL_STAGES,
    TINY,
    ProjectCopy,
    pipeline_template,
    ran_stages,
)

pytestmark = pytest.mark.e2e


DATA_STAGES = ("ingest", "split", "normalize-stats")
METRICS = ("metrics/train.json", "metrics/valid.json", "metrics/test.json")


@pytest.fixture(scope="module")
def first_results(tmp_path_factory) -> dict:
    """Data hashes and metrics of the session's first pipeline run (its template is never
    changed)."""
    template = ProjectCopy(pipeline_template(tmp_path_factory)[0])
    return {"outs": template.lock_outs(*DATA_STAGES), **{m: template.json(m) for m in METRICS}}


# First in the file: it needs no shared pipeline run, so this worker works while another
# builds that run.
def test_whole_pipeline_on_a_folder_of_photos(tmp_path):
    """A user's own folder of RGB JPEGs, one subfolder per class, through every stage."""
    from PIL import Image

    photos = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for c, label in enumerate(("apple", "banana", "cherry")):
        (photos / label).mkdir(parents=True)
        for i in range(12):
            colour = np.array([[220, 40, 40], [230, 210, 60], [120, 20, 60]][c])
            pixels = np.clip(colour + rng.normal(0, 25, (16, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(photos / label / f"{i:02d}.jpg", quality=90)
    copy = ProjectCopy.create(tmp_path / "project")
    copy.compose("data=folder", f"data.root={photos}", "data.image_size=8", "model.widths=[8,16]",
                 "train.epochs=4", "train.batch_size=8", "train.augment.flip=true")  # fmt: skip
    assert ran_stages(copy.run("dvc", "repro").stdout) == ALL_STAGES
    report = copy.json("data/ingested/report.json")
    assert (
        report["images"] == 36 and report["image_shape"] == [8, 8, 3] and report["bad_files"] == []
    )
    spec = copy.json("models/model.json")
    assert spec["classes"] == ["apple", "banana", "cherry"] and spec["channels"] == 3
    assert copy.json("metrics/test.json")["images"] == 6
    assert copy.json("metrics/test.json")["accuracy"] > 0.5  # distinct colours: easy


def test_a_fresh_run_gives_identical_data_hashes_and_metrics(first_results, tmp_path):
    fresh = ProjectCopy.create(tmp_path / "fresh")
    fresh.compose(*TINY)
    fresh.run("dvc", "repro")
    assert fresh.lock_outs(*DATA_STAGES) == first_results["outs"]
    for name in METRICS:
        assert fresh.json(name) == first_results[name], name
