"""predict: new image files -> a CSV of predictions; unreadable files are reported, not fatal."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.core.errors import StagewiseError
from pipeline.core.paths import ModelFiles
from pipeline.data.split import load_split_images
from pipeline.model.inference import Classifier
from pipeline.model.networks import ModelSpec, build_model, save_model
from stages import predict
from tests.conftest import compose_config


@pytest.fixture
def model_dir(tmp_path, digits_paths):
    torch.manual_seed(0)
    spec = ModelSpec("small_cnn", [str(d) for d in range(10)], 1, 8, [0.3], [0.37], widths=[8, 16])
    save_model(ModelFiles(tmp_path / "model"), build_model(spec), spec)
    return tmp_path / "model"


def test_predicting_files_matches_predicting_their_pixels(tmp_path, model_dir, digits_paths):
    valid = load_split_images(digits_paths, "valid")
    folder = tmp_path / "new"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(valid.images[i, :, :, 0]).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"garbage")
    cfg = compose_config(f"predict.input={folder}", f"predict.output={tmp_path / 'out.csv'}")
    cfg = replace(cfg, predict=replace(cfg.predict, model_dir=str(model_dir)))
    output = predict.run(cfg)
    rows = pd.read_csv(output, keep_default_na=False).set_index("path")
    assert rows.loc[str(folder / "broken.png"), "error"].startswith("not an image")
    expected = Classifier.load(ModelFiles(model_dir)).predict_frame(valid.images[:5])
    for i in range(5):
        row = rows.loc[str(folder / f"{i}.png")]
        assert str(row["label"]) == expected["label"][i] and row["error"] == ""
        assert float(row["probability"]) == pytest.approx(expected["probability"][i], rel=1e-5)
    assert list(rows.columns[:2]) == ["label", "probability"] and "p_9" in rows.columns


def test_csv_input_resolves_paths_and_missing_input_is_named(tmp_path, model_dir):
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((20, 12, 3), dtype=np.uint8)).save(tmp_path / "img" / "a.jpg")
    pd.DataFrame({"path": ["img/a.jpg", "img/missing.jpg"]}).to_csv(
        tmp_path / "list.csv", index=False
    )
    cfg = compose_config(
        f"predict.input={tmp_path / 'list.csv'}", f"predict.output={tmp_path / 'out.csv'}"
    )
    cfg = replace(cfg, predict=replace(cfg.predict, model_dir=str(model_dir)))
    rows = pd.read_csv(predict.run(cfg), keep_default_na=False)
    assert rows["error"].tolist()[0] == "" and "No such file" in rows["error"].tolist()[1]
    with pytest.raises(StagewiseError, match=r"predict\.input is not set"):
        predict.run(compose_config())
