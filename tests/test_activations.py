"""train.activation_stats: the hooks' numbers against hand computations, training-only
recording, unchanged weights, Grad-CAM on a model built to look at one quadrant, and the train
and evaluate stages writing the files and MLflow artifacts."""

import shutil
import statistics

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from pipeline.core.paths import Paths
from pipeline.evaluate.gradcam import grad_cam
from pipeline.model.device import Batches
from pipeline.model.networks import ModelSpec, build_model
from pipeline.model.preprocess import Normalizer
from pipeline.train.activation_report import write_activation_report
from pipeline.train.activations import (
    ActivationStats,
    hooked_layers,
    layer_stats,
    sorted_histogram,
)
from pipeline.train.loop import FitState, fit
from tests.conftest import compose_config
from tests.project import TINY

CPU = torch.device("cpu")


def test_layer_stats_match_a_hand_computation():
    values = [-1.0, 0.0, 0.1, 0.3, 0.6, 2.0, 10.0, 12.0]
    stats = layer_stats(torch.tensor(values).reshape(2, 4))
    assert stats[0].item() == pytest.approx(statistics.mean(values))
    assert stats[1].item() == pytest.approx(statistics.stdev(values))
    # [0, 10] holds 6 of the values; [0, 0.5) (the first two bins) holds 0.0, 0.1 and 0.3
    assert stats[2].item() == pytest.approx(3 / 6)
    expected = np.zeros(40)
    expected[[0, 1, 2, 8, 39]] = [2, 1, 1, 1, 1]  # 0.25 wide bins; 10.0 falls in the last one
    np.testing.assert_array_equal(stats[3:].numpy(), expected)


def test_the_deterministic_histogram_counts_as_histc():
    x = torch.cat([torch.randn(5000) * 4, torch.arange(0, 10.25, 0.25)])  # edges included
    np.testing.assert_array_equal(sorted_histogram(x).numpy(), torch.histc(x, 40, 0, 10).numpy())


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(
        ModelSpec("small_cnn", [str(c) for c in range(10)], 1, 8, [0.3], [0.37], [4, 8], 0.0)
    )


def test_hooks_record_every_few_training_batches_only_and_the_mean_gradient_norm():
    model = small_cnn()
    stats = ActivationStats(model, every=2)
    assert stats.names == ["0", "1", "3", "4", "8"]  # the conv blocks and the head
    x = torch.randn(4, 1, 8, 8)
    step_norms = []
    model.train()
    for _ in range(3):  # training batches 1, 2, 3: 1 and 3 are recorded
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        head = torch.cat([p.grad.flatten() for p in model[8].parameters()])
        step_norms.append(head.norm().item())
        model.eval()
        model(x)  # a valid pass in between records nothing
        model.train()
    stats.after_epoch(FitState(model, torch.Generator(), total_epochs=1, epoch=1))
    assert [b for b, _, i in stats.records if i == 0] == [1, 3]
    first_block = model[0](x)  # the weights did not change: no optimizer step
    np.testing.assert_allclose(stats.values[0], layer_stats(first_block).numpy(), rtol=1e-6)
    [head_row] = [row for row in stats.grad_rows if row["layer"] == "8"]
    assert head_row == {
        "epoch": 1, "layer": "8", "grad_norm": pytest.approx(statistics.mean(step_norms))
    }  # fmt: skip
    stats.remove()
    assert not model._forward_pre_hooks and not model[0]._forward_hooks


def test_resnet_blocks_are_hooked_and_every_parameter_is_in_one_hooked_layer():
    model = build_model(ModelSpec("resnet18", ["a", "b"], 3, 32, [0.5] * 3, [0.25] * 3))
    layers = hooked_layers(model)
    assert list(layers) == [
        "conv1", "bn1", *(f"layer{s}.{b}" for s in range(1, 5) for b in range(2)), "fc"
    ]  # fmt: skip
    hooked = sum(p.numel() for layer in layers.values() for p in layer.parameters())
    assert hooked == sum(p.numel() for p in model.parameters())


def digits_batches() -> tuple[Batches, Batches]:
    digits = load_digits()
    images = (digits.images * 255 / 16).astype(np.uint8)[:320, :, :, None]
    targets = digits.target[:320]
    return (
        Batches.from_numpy(images[:256], targets[:256], CPU),
        Batches.from_numpy(images[256:], targets[256:], CPU),
    )


def test_training_with_the_hooks_gives_the_same_weights_as_without():
    train, valid = digits_batches()
    cfg = compose_config("train.epochs=2", "train.batch_size=32").train
    normalizer = Normalizer.create([0.3], [0.37], CPU)
    plain, watched = small_cnn(), small_cnn()
    stats = ActivationStats(watched)
    fit(plain, train, valid, cfg, normalizer, seed=1)
    fit(watched, train, valid, cfg, normalizer, seed=1, callbacks=(stats,))
    for (name, a), (_, b) in zip(
        plain.state_dict().items(), watched.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert {row["batch"] for row in stats.stats_rows()} == {1, 5, 9, 13}
    assert [row["epoch"] for row in stats.grad_rows] == [1] * 5 + [2] * 5
    assert not watched._forward_pre_hooks  # removed after the fit


class TwoQuadrants(nn.Module):
    """Output 0 sees only the top-left quadrant of the image, output 1 only the bottom-right:
    the last convolution gets one masked copy of the image per output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, groups=2, bias=False)  # 1x1: nothing spills over
        nn.init.constant_(self.conv.weight, 1.0)
        mask = torch.zeros(2, 16, 16)
        mask[0, :8, :8] = mask[1, 8:, 8:] = 1
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x * self.mask)).mean(dim=(2, 3))


def test_grad_cam_lights_up_where_the_chosen_output_looks():
    images = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) + 0.1
    heatmaps = grad_cam(TwoQuadrants(), images, [0, 1, 0])
    assert heatmaps.shape == (3, 16, 16)
    assert heatmaps.max() == pytest.approx(1.0)
    top_left, bottom_right = (slice(0, 8), slice(0, 8)), (slice(8, 16), slice(8, 16))
    for heatmap, (rows, cols) in zip(heatmaps, [top_left, bottom_right, top_left], strict=True):
        assert heatmap[rows, cols].min() > 0  # every pixel of the quadrant counts
        assert heatmap[rows, cols].sum() == pytest.approx(heatmap.sum())  # and nothing else


def test_the_activation_folder_holds_only_this_runs_files_and_a_note_when_off(tmp_path):
    folder = tmp_path / "activations"
    folder.mkdir()
    (folder / "stats.csv").write_text("from an earlier run")
    write_activation_report(folder, None, small_cnn(), run=None)
    # DVC's output exists, and is not empty (DVC would warn): only a note
    assert [p.name for p in folder.iterdir()] == ["README.txt"]


def test_the_stages_write_the_activation_files_and_log_them(digits_paths, tmp_path):
    """stages.train and stages.evaluate (in this process, as python -m runs them) with
    train.activation_stats=true on a copy of the digits data."""
    from pipeline.tracking.store import open_store
    from stages import evaluate, train

    shutil.copytree(digits_paths.root / "data", tmp_path / "data")
    paths = Paths(tmp_path)
    cfg = compose_config(*TINY, "train.activation_stats=true")
    train.run(cfg, paths)
    written = sorted(p.name for p in paths.train_activations.iterdir())
    assert written == [
        "README.txt", "color_dim.png", "first_conv_filters.png", "grad_norms.csv",
        "grad_norms.png", "histograms.csv", "layer_stats.png", "stats.csv",
    ]  # fmt: skip
    evaluate.run(cfg, paths)
    assert sorted(p.name for p in paths.valid_grad_cam.iterdir()) == ["top_losses.png"]
    client = open_store(paths).client
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "train/activations")}
    assert logged == {f"train/activations/{name}" for name in written if name != "README.txt"}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "valid/grad_cam")] == [
        "valid/grad_cam/top_losses.png"
    ]
