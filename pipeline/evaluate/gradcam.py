"""Grad-CAM (Selvaraju et al. 2017): where in an image the model looked for one of its outputs.

Hand-written with two hooks on the last Conv2d (about twenty lines; no package needed). The
output per image is the caller's choice (single-label: the predicted class; a multi-label or
regression task picks its own), so it stays a plain list of indices.
"""

import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.errors import StagewiseError
from pipeline.core.io import atomic_write
from pipeline.core.paths import ModelFiles
from pipeline.evaluate.plots import grad_cam_figure
from pipeline.model.inference import Classifier
from pipeline.model.preprocess import Normalizer
from pipeline.tracking.runs import Run


def last_conv(model: nn.Module) -> nn.Conv2d:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise StagewiseError(f"Grad-CAM needs a Conv2d; {type(model).__name__} has none")
    return convs[-1]


def grad_cam(
    model: nn.Module, images_normalized: torch.Tensor, output_index: list[int]
) -> torch.Tensor:
    """Heatmaps (N x H x W, each scaled to [0, 1], at the images' size) of how much each place
    of the last Conv2d's output raised output[i, output_index[i]] for image i: its channels
    weighted by their spatially averaged gradients, summed, negatives dropped."""
    if len(output_index) != len(images_normalized):
        raise ValueError(f"{len(output_index)} output indices for {len(images_normalized)} images")
    kept: list[torch.Tensor] = []
    handle = last_conv(model).register_forward_hook(lambda m, i, output: kept.append(output))
    try:
        model.eval()
        with torch.enable_grad():
            x = images_normalized.detach().float().requires_grad_(True)  # a graph to the conv
            outputs = model(x).float().reshape(len(x), -1)
            rows = torch.arange(len(x), device=outputs.device)
            chosen = outputs[rows, torch.as_tensor(output_index, device=outputs.device)]
            (gradient,) = torch.autograd.grad(chosen.sum(), kept[0])  # images do not mix
    finally:
        handle.remove()
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * kept[0].detach()).sum(dim=1, keepdim=True)).float()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12)
    return (cam / peak[:, None, None]).detach()


def classifier_grad_cam(
    classifier: Classifier, images: np.ndarray, output_index: list[int]
) -> np.ndarray:
    """grad_cam on raw uint8 images (N x H x W x C), normalized as the classifier does."""
    normalizer = Normalizer.create(classifier.spec.mean, classifier.spec.std, classifier.device)
    x = normalizer(classifier.as_batch(images))
    return grad_cam(classifier.model, x, output_index).cpu().numpy()


def write_grad_cam(
    folder: Path,
    run: Run,
    enabled: bool,
    files: ModelFiles,
    images: np.ndarray,
    output_index: list[int],
    titles: list[str],
    heading: str,
) -> None:
    """With enabled (train.activation_stats), folder/top_losses.png: the images (titled
    titles, under heading) with their Grad-CAM for output_index, also logged into the run
    under valid/grad_cam. Without, no folder: an earlier run's figure is removed."""
    shutil.rmtree(folder, ignore_errors=True)
    if not enabled or not len(images):
        return
    folder.mkdir(parents=True)
    heatmaps = classifier_grad_cam(Classifier.load(files), images, output_index)
    figure = grad_cam_figure(images, heatmaps, titles, heading)
    target = folder / "top_losses.png"
    atomic_write(target, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    run.log_artifact(target, "valid/grad_cam")
