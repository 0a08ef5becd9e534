"""Pretrained weights: read without unpickling, put into every layer but a new head."""

import collections
import urllib.error

import pytest
import torch
from safetensors.torch import save_file

from pipeline.core.errors import StagewiseError
from pipeline.core.paths import ModelFiles
from pipeline.model.networks import ModelSpec, build_model, save_model
from pipeline.model.weights import head_keys, pretrained_state, read_state_file, transfer


def spec(arch: str = "small_cnn", channels: int = 1, classes: str = "abc") -> ModelSpec:
    return ModelSpec(
        arch, list(classes), channels, 16, [0.5] * channels, [0.25] * channels, [8, 16]
    )


def no_runs(run_id: str) -> ModelFiles:
    raise AssertionError("no MLflow run expected")


def test_a_state_dict_file_goes_into_the_body_and_the_head_stays_new(tmp_path):
    torch.manual_seed(0)
    source = build_model(spec(classes="abcdefg"))  # another number of classes
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    torch.manual_seed(1)
    target = build_model(spec())
    head_before = {k: v.clone() for k, v in target.state_dict().items() if k in head_keys(target)}
    state = pretrained_state("weights.pt", "small_cnn", tmp_path, no_runs)
    done = transfer(target, state, "weights.pt")
    assert done.new_head == sorted(head_before)
    for key, value in target.state_dict().items():
        expected = head_before[key] if key in head_before else source.state_dict()[key]
        assert torch.equal(value, expected), key
    assert done.loaded == len(target.state_dict()) - len(head_before)


def test_safetensors_and_checkpoint_style_files_are_read(tmp_path):
    model = build_model(spec())
    save_file(dict(model.state_dict()), str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "lightning.ckpt")
    for name in ("w.safetensors", "lightning.ckpt"):
        state = read_state_file(tmp_path / name)
        assert state.keys() == model.state_dict().keys()


class Payload:
    """Any class: unpickling it means running code the file chose."""


def test_a_pickled_object_offered_as_weights_is_refused(tmp_path):
    torch.save({"weights": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(StagewiseError, match=r"pickled Python objects.*refused"):
        read_state_file(tmp_path / "evil.pt")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(StagewiseError, match="is not a torch weights file"):
        read_state_file(tmp_path / "junk.pth")
    with pytest.raises(StagewiseError, match="no such file"):
        read_state_file(tmp_path / "missing.pt")


@pytest.mark.parametrize("name", ["notes.txt", "notes.pt", "sub/notes"])
def test_a_text_file_as_weights_is_refused_with_one_line(tmp_path, name):
    """torch's weights-only unpickler raises KeyError on this text (its 'h' reads as BINGET)."""
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("hello, these are my notes\n")
    with pytest.raises(StagewiseError, match=f"model.weights={path} is not a torch weights file"):
        pretrained_state(name, "small_cnn", tmp_path, no_runs)


def test_weights_of_another_architecture_are_refused_with_the_mismatch():
    source = build_model(ModelSpec(**{**spec().__dict__, "widths": [4, 4]}))
    with pytest.raises(StagewiseError, match=r"does not fit this model.*shape"):
        transfer(build_model(spec()), source.state_dict(), "w.pt")


def test_rgb_weights_are_summed_for_a_greyscale_model():
    torch.manual_seed(0)
    rgb = build_model(spec("resnet18", channels=3))
    grey = build_model(spec("resnet18", channels=1))
    done = transfer(grey, rgb.state_dict(), "rgb")
    assert done.adapted == ["conv1.weight"] and done.new_head == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(grey.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(grey.layer4[1].conv2.weight, rgb.layer4[1].conv2.weight)


def test_torchvision_weights_come_from_torchs_cache(tmp_path, monkeypatch):
    """The download is mocked (no network here); the cached file is used as on a user's machine."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub/checkpoints/resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    imagenet = build_model(spec("resnet18", channels=3, classes="x" * 1000))
    torch.save(collections.OrderedDict(imagenet.state_dict()), cached)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    state = pretrained_state("IMAGENET1K_V1", "resnet18", tmp_path, no_runs)
    assert torch.equal(
        state["layer1.0.conv1.weight"], imagenet.state_dict()["layer1.0.conv1.weight"]
    )
    cached.unlink()
    with pytest.raises(StagewiseError, match=f"not in the cache \\({cached}\\).*local file"):
        pretrained_state("DEFAULT", "resnet18", tmp_path, no_runs)


def test_unknown_weight_names_list_the_valid_ones():
    with pytest.raises(StagewiseError, match="valid: DEFAULT, IMAGENET1K_V1"):
        pretrained_state("IMAGENET9K", "resnet18", ".", no_runs)
    with pytest.raises(StagewiseError, match="not a torchvision model"):
        pretrained_state("DEFAULT", "small_cnn", ".", no_runs)


def test_a_run_of_another_architecture_is_refused(tmp_path):
    files = ModelFiles(tmp_path)
    save_model(files, build_model(spec()), spec())
    with pytest.raises(StagewiseError, match=r"is a small_cnn, but model\.arch=resnet18"):
        pretrained_state("runs:/abc", "resnet18", tmp_path, lambda run_id: files)
