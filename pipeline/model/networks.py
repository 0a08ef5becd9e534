"""Build a classifier by name, and save / load trained weights without pickle.

Names are `small_cnn` (for tiny images such as the 8x8 digits) or any torchvision
classification architecture (resnet18, resnet34, ...). torchvision is imported only when
one of its architectures is asked for: it costs ~5 s.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.core.errors import StagewiseError
from pipeline.core.io import atomic_write, write_json
from pipeline.core.paths import ModelFiles
from pipeline.data.decode import MAX_PIXELS, DecodeSettings
from pipeline.tasks.heads import Head, make_head


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a trained model and feed it: saved next to its weights."""

    arch: str
    classes: list[str]
    channels: int
    image_size: int
    mean: list[float]
    std: list[float]
    widths: list[int] | None = None
    dropout: float = 0.0
    # How ingest fitted training images to image_size, so new images are fitted the same way.
    resize: str = "squish"
    background: list[int] = field(default_factory=lambda: [0, 0, 0])
    # What the outputs mean (pipeline.tasks.heads); `classes` names them: classes, labels or
    # targets. threshold: multilabel's; target_mean/std and y_range: regression's.
    task: str = "single_label"
    threshold: float | None = None
    target_mean: list[float] | None = None
    target_std: list[float] | None = None
    y_range: list[float] | None = None

    def head(self) -> Head:
        return make_head(self.task, self.threshold, self.target_mean, self.target_std, self.y_range)

    def decode_settings(self, max_pixels: int = MAX_PIXELS) -> DecodeSettings:
        """How new images (files or pixels) are fitted to this model, as ingest fitted its
        training images."""
        return DecodeSettings(
            self.image_size, self.channels, self.resize, tuple(self.background), max_pixels
        )


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def small_cnn(in_channels: int, n_classes: int, widths: list[int], dropout: float) -> nn.Sequential:
    """Two conv blocks per width, a 2x2 max-pool between widths, global pool, linear head."""
    layers: list[nn.Module] = []
    c = in_channels
    for i, width in enumerate(widths):
        if i:
            layers.append(nn.MaxPool2d(2))
        layers += [conv_block(c, width), conv_block(width, width)]
        c = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, n_classes)]
    return nn.Sequential(*layers)


def torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def available_archs() -> list[str]:
    return ["small_cnn", *torchvision_names()]


def build_model(spec: ModelSpec) -> nn.Module:
    n_classes = len(spec.classes)
    if spec.arch == "small_cnn":
        if not spec.widths:
            raise StagewiseError(
                "model.widths: small_cnn needs a list of layer widths, e.g. [32, 64, 128]"
            )
        return small_cnn(spec.channels, n_classes, list(spec.widths), spec.dropout)
    if spec.arch not in torchvision_names():
        raise StagewiseError(
            f"model.arch={spec.arch!r} is unknown; valid names: {', '.join(available_archs())}"
        )
    import torchvision

    model = torchvision.models.get_model(spec.arch, weights=None, num_classes=n_classes)
    if spec.channels != 3:
        adapt_first_conv(model, spec.channels)
    return model


def adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Replace the first convolution with one taking in_channels (e.g. 1 for greyscale)."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(
                    parent,
                    name,
                    nn.Conv2d(
                        in_channels,
                        child.out_channels,
                        child.kernel_size,
                        child.stride,
                        child.padding,
                        child.dilation,
                        child.groups,
                        child.bias is not None,
                    ),
                )
                return
    raise StagewiseError("model has no convolution to adapt to the input channels")


def save_model(files: ModelFiles, model: nn.Module, spec: ModelSpec) -> None:
    """Weights as safetensors (plain tensors, nothing executable) + the spec as JSON."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write(files.weights, lambda tmp: save_file(state, str(tmp)))
    write_json(files.spec, asdict(spec))


def load_spec(path: Path) -> ModelSpec:
    try:
        return ModelSpec(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise StagewiseError(f"{path} is missing: run `dvc repro train` first") from None
    except (json.JSONDecodeError, TypeError) as e:
        raise StagewiseError(f"{path} is not a model spec ({e}); rerun `dvc repro train`") from None


def load_model(files: ModelFiles) -> tuple[nn.Module, ModelSpec]:
    spec = load_spec(files.spec)
    model = build_model(spec)
    try:
        state = load_file(str(files.weights))
    except FileNotFoundError:
        raise StagewiseError(f"{files.weights} is missing: run `dvc repro train` first") from None
    except SafetensorError as e:
        raise StagewiseError(f"{files.weights} is not a safetensors file ({e})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise StagewiseError(f"{files.weights} does not fit model {spec.arch}: {first}") from None
    return model.eval(), spec
