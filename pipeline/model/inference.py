"""A trained model ready for raw images: resizing, normalization and batching in one place.

Used by evaluate, test-holdout and the packaged MLflow model alike, so predictions match
whichever way the model is called.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.core.config import AugmentConfig
from pipeline.core.paths import ModelFiles
from pipeline.data.decode import fit_pixels
from pipeline.model.augment import augment
from pipeline.model.device import autocast, prepare_model
from pipeline.model.networks import ModelSpec, load_model
from pipeline.model.preprocess import Normalizer


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    normalizer: Normalizer,
    batch_size: int,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Logits (float32, on the CPU) for N x H x W x C uint8 images, copied to the device per
    batch; transform (e.g. test-time augmentation) sees each float batch before normalizing."""
    model.eval()
    device = normalizer.mean.device
    outputs = []
    for start in range(0, len(images), batch_size):
        x = normalizer(images[start : start + batch_size], transform)
        with autocast(device):
            outputs.append(model(x).float())
    return torch.cat(outputs).cpu() if outputs else torch.empty(0)


@dataclass(frozen=True)
class TTA:
    """Test-time augmentation: n augmented passes (the training augmentation), averaged and
    blended with the plain prediction, which keeps weight beta (fastai's defaults: 4, 0.25)."""

    augment: AugmentConfig
    n: int = 4
    beta: float = 0.25
    seed: int = 0


@dataclass
class Classifier:
    model: nn.Module
    spec: ModelSpec
    device: torch.device

    @classmethod
    def load(cls, files: ModelFiles, device: str = "cpu") -> "Classifier":
        model, spec = load_model(files)
        torch_device = torch.device(device)
        return cls(prepare_model(model, torch_device).eval(), spec, torch_device)

    def as_batch(self, images: np.ndarray | list) -> torch.Tensor:
        """Raw images (an N x H x W (x C) batch or a list of H x W (x C) images of any sizes,
        values 0..255) -> uint8 N x S x S x C on the device, each fitted to the model's size
        and channels exactly as ingest fitted the training images (decode.fit_pixels)."""
        fitted = fit_pixels(images, self.spec.decode_settings())
        return torch.from_numpy(fitted).to(self.device)

    def predict_proba(
        self, images: np.ndarray | list, batch_size: int = 512, tta: TTA | None = None
    ) -> np.ndarray:
        """What the model says per output, N x len(spec.classes): class probabilities, label
        probabilities or target values (pipeline.tasks.heads); with tta, blended with the mean
        over augmented copies as fastai's tta does."""
        batch = self.as_batch(images)
        normalizer = Normalizer.create(self.spec.mean, self.spec.std, self.device)
        head = self.spec.head()

        def proba(transform=None) -> torch.Tensor:
            logits = predict_logits(self.model, batch, normalizer, batch_size, transform)
            return head.predict(logits)

        plain = proba()
        if tta is None or tta.n < 1:
            return plain.numpy()
        generator = torch.Generator(device=self.device).manual_seed(tta.seed)
        augmented = [proba(lambda x: augment(x, tta.augment, generator)) for _ in range(tta.n)]
        return torch.lerp(torch.stack(augmented).mean(dim=0), plain, tta.beta).numpy()

    def predict_frame(self, images: np.ndarray | list) -> pd.DataFrame:
        """The task's answer per image (pipeline.tasks.heads): for one class per image, the
        label, its probability and one probability column per class."""
        return self.spec.head().answer(self.predict_proba(images), self.spec.classes)

    @property
    def answer_columns(self) -> list[str]:
        return self.spec.head().answer_columns(self.spec.classes)
