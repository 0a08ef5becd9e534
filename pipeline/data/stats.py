"""Per-channel mean and standard deviation of the training images, streamed in chunks.

Computed on the train split only (the valid and test images must not leak into anything the
model is fitted with) and shipped with the model, which normalizes its inputs with them.
Units: fractions of full scale, i.e. pixel / 255, as the model sees them.
"""

import numpy as np

from pipeline.data.store import iter_chunks


def channel_stats(images: np.ndarray, indices: np.ndarray, chunk: int = 4096) -> dict:
    """{"mean": [...], "std": [...], "images": n} per channel of images[indices] (N x H x W x C)."""
    if len(indices) == 0:
        raise ValueError("no training images to compute statistics on")
    channels = images.shape[-1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    order = np.sort(indices)  # sequential reads from the memory map
    for part in iter_chunks(len(order), chunk):
        pixels = images[order[part]].reshape(-1, channels).astype(np.float64) / 255.0
        total += pixels.sum(axis=0)
        total_sq += np.square(pixels).sum(axis=0)
    count = len(order) * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return {"mean": mean.tolist(), "std": std.tolist(), "images": len(order)}
