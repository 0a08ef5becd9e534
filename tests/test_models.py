"""Models by name; weights saved and loaded as safetensors, never unpickled."""

import pytest
import torch

from pipeline.core.errors import StagewiseError
from pipeline.core.paths import ModelFiles
from pipeline.model.networks import ModelSpec, build_model, load_model, save_model


def spec(arch: str = "small_cnn", channels: int = 1, size: int = 8) -> ModelSpec:
    return ModelSpec(
        arch=arch,
        classes=list("abc"),
        channels=channels,
        image_size=size,
        mean=[0.5] * channels,
        std=[0.25] * channels,
        widths=[8, 16],
        dropout=0.0,
    )


@pytest.mark.parametrize(
    ("arch", "channels", "size"), [("small_cnn", 1, 8), ("small_cnn", 3, 20), ("resnet18", 1, 8)]
)
def test_models_output_one_logit_per_class(arch, channels, size):
    model = build_model(spec(arch, channels, size)).eval()
    assert model(torch.zeros(2, channels, size, size)).shape == (2, 3)


def test_unknown_architecture_lists_the_valid_names():
    with pytest.raises(StagewiseError, match="valid names: small_cnn") as error:
        build_model(spec("resnet19"))
    assert "small_cnn" in str(error.value) and "resnet34" in str(error.value)


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18"])
def test_saved_model_loads_with_identical_outputs(tmp_path, arch):
    torch.manual_seed(0)
    model = build_model(spec(arch)).eval()
    files = ModelFiles(tmp_path)
    save_model(files, model, spec(arch))
    loaded, loaded_spec = load_model(files)
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded_spec == spec(arch)


def test_a_pickled_file_offered_as_weights_is_refused(tmp_path):
    files = ModelFiles(tmp_path)
    save_model(files, build_model(spec()), spec())
    torch.save(build_model(spec()).state_dict(), files.weights)  # a pickle, not safetensors
    with pytest.raises(StagewiseError, match="not a safetensors file"):
        load_model(files)


def test_weights_of_another_model_are_refused(tmp_path):
    files = ModelFiles(tmp_path)
    save_model(files, build_model(spec()), spec())
    other = ModelSpec(**{**spec().__dict__, "widths": [4, 4]})
    save_model(ModelFiles(tmp_path / "other"), build_model(other), other)
    files.weights.write_bytes(ModelFiles(tmp_path / "other").weights.read_bytes())
    with pytest.raises(StagewiseError, match="does not fit model small_cnn"):
        load_model(files)
