"""predict: new image files -> a CSV of predictions; unreadable files are reported, not fatal."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.core.config import Config
from pipeline.core.errors import StagewiseError
from pipeline.core.paths import ModelFiles
from pipeline.data.split import load_split_images
from pipeline.model.inference import Classifier
from pipeline.model.networks import ModelSpec, build_model, save_model
from stages import predict
from tests.conftest import compose_config
from tests.images import hostile_files, solid_png, write_bytes


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


def predict_config(model_dir, source, output) -> Config:
    cfg = compose_config(f"predict.input={source}", f"predict.output={output}")
    return replace(cfg, predict=replace(cfg.predict, model_dir=str(model_dir)))


def test_hostile_files_get_their_error_and_the_others_their_answer(tmp_path, model_dir):
    folder = tmp_path / "new"
    for name, raw in hostile_files().items():
        write_bytes(folder / name, raw)
    solid_png(folder / "good.png", (90, 90, 90))
    rows = pd.read_csv(predict.run(predict_config(model_dir, folder, tmp_path / "out.csv")))
    rows = rows.fillna("").set_index("path")
    for name in hostile_files():
        row = rows.loc[str(folder / name)]
        assert row["error"].startswith("unreadable: ") and row["label"] == "", row
    assert rows.loc[str(folder / "good.png"), "error"] == ""
    assert rows.loc[str(folder / "good.png"), "label"] != ""


def test_a_folder_as_output_is_refused_before_any_work(tmp_path, model_dir, monkeypatch):
    solid_png(tmp_path / "new" / "a.png", (0, 0, 0))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StagewiseError, match=r"predict\.output=\. is a folder; .*predictions\.csv"):
        predict.run(predict_config(model_dir, tmp_path / "new", "."))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(StagewiseError, match=r"predict\.output=.*a_file/out\.csv: cannot write"):
        predict.run(predict_config(model_dir, tmp_path / "new", tmp_path / "a_file" / "out.csv"))


def test_a_csv_that_is_not_utf8_or_lacks_a_path_is_named(tmp_path, model_dir):
    solid_png(tmp_path / "a.png", (0, 0, 0))
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("path\na.png\ncafé.png\n".encode("latin-1"))
    with pytest.raises(StagewiseError, match=r"latin1\.csv: the CSV is not UTF-8 .*0xe9"):
        predict.run(predict_config(model_dir, latin1, tmp_path / "out.csv"))
    blank = tmp_path / "blank.csv"
    blank.write_text("path,note\na.png,x\n,y\n")
    with pytest.raises(StagewiseError, match=r"blank\.csv: the path column is empty on line 3"):
        predict.run(predict_config(model_dir, blank, tmp_path / "out.csv"))
