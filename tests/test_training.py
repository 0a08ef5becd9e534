"""fine_tune, checkpoints and resume, the optional callbacks, the sanity check and lr_find,
all on the real digits data on the CPU."""

import re
from dataclasses import replace

import pytest
import torch

from pipeline.core.errors import StagewiseError
from pipeline.core.paths import Paths
from pipeline.data.split import load_split_images
from pipeline.model.device import Batches
from pipeline.model.networks import ModelSpec, build_model
from pipeline.model.preprocess import Normalizer
from pipeline.model.weights import head_keys
from pipeline.train.callbacks import (
    Checkpoint,
    EarlyStopping,
    KeepBest,
    OverfitWatch,
    epochs_since_best,
    overfitting_since,
)
from pipeline.train.checkpoint import load_checkpoint
from pipeline.train.fine_tune import discriminative_lrs, layer_groups
from pipeline.train.loop import (
    Callback,
    Diverged,
    EpochResult,
    FitState,
    fit,
    overfit_one_batch,
)
from pipeline.train.lr_find import lr_find, valley
from tests.conftest import compose_config
from tests.project import mlflow_client

CPU = torch.device("cpu")
TRAIN = compose_config(
    "model.dropout=0.2"
).train  # augmentation and dropout both draw random numbers


def digits(paths: Paths) -> tuple[Batches, Batches, Normalizer, list[str]]:
    train, valid = load_split_images(paths, "train"), load_split_images(paths, "valid")
    return (
        Batches.from_numpy(train.images, train.targets, CPU),
        Batches.from_numpy(valid.images, valid.targets, CPU),
        Normalizer.create([0.3], [0.37], CPU),
        train.classes,
    )


def small_cnn(classes: list[str], seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelSpec("small_cnn", classes, 1, 8, [0.3], [0.37], [8, 16], 0.2))


class Interrupt(Callback):
    """Ctrl-C (or the stages' SIGTERM handler's SystemExit) right after epoch `after`."""

    def __init__(self, after: int, exception: BaseException) -> None:
        self.after, self.exception = after, exception

    def after_epoch(self, state: FitState) -> None:
        if state.epoch == self.after:
            raise self.exception


class Watch(Callback):
    """Copies of the weights after each epoch."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def after_epoch(self, state: FitState) -> None:
        self.weights[state.epoch] = {k: v.clone() for k, v in state.model.state_dict().items()}


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


@pytest.mark.parametrize(
    ("pretrained", "epochs", "freeze_epochs", "stop_after"),
    [(False, 4, 0, 2), (True, 3, 1, 1), (True, 3, 1, 3)],
    ids=["fit", "fine_tune-at-unfreezing", "fine_tune-mid-phase"],
)
@pytest.mark.parametrize(
    "exception", [KeyboardInterrupt(), SystemExit(143)], ids=["ctrl-c", "term"]
)
def test_resume_after_an_interruption_gives_identical_weights(
    digits_paths, tmp_path, pretrained, epochs, freeze_epochs, stop_after, exception
):
    train, valid, normalizer, classes = digits(digits_paths)
    cfg = replace(
        TRAIN, epochs=epochs, fine_tune=replace(TRAIN.fine_tune, freeze_epochs=freeze_epochs)
    )
    whole = small_cnn(classes, seed=0)
    expected = fit(whole, train, valid, cfg, normalizer, seed=0, pretrained=pretrained)

    interrupted = small_cnn(classes, seed=0)
    # No write on the interval: the interruption itself must save the last finished epoch.
    checkpoint = Checkpoint(tmp_path / "train.pt", "config-1", "run-1", every_s=3600)
    with pytest.raises(type(exception)):
        fit(
            interrupted,
            train,
            valid,
            cfg,
            normalizer,
            0,
            pretrained,
            (checkpoint, Interrupt(stop_after, exception)),
        )

    saved = load_checkpoint(tmp_path / "train.pt", "config-1")
    assert saved["epoch"] == stop_after and saved["run_id"] == "run-1"
    resumed = small_cnn(classes, seed=123)  # other initial weights: the checkpoint must win
    state = fit(resumed, train, valid, cfg, normalizer, 0, pretrained, (checkpoint,), resume=saved)
    assert_same_weights(resumed, whole)
    without_time = [replace(r, epoch_seconds=0) for r in state.history]
    assert without_time == [replace(r, epoch_seconds=0) for r in expected.history]


class OnDisk(Callback):
    """The epoch of the checkpoint on disk after each epoch (None: no file yet)."""

    def __init__(self, path) -> None:
        self.path, self.epochs = path, []

    def after_epoch(self, state: FitState) -> None:
        exists = self.path.exists()
        self.epochs.append(load_checkpoint(self.path, "id")["epoch"] if exists else None)


@pytest.mark.parametrize(("every_s", "on_disk"), [(0.0, [1, 2, 3]), (3600.0, [None, None, None])])
def test_checkpoints_are_written_on_their_interval_and_at_the_end(
    digits_paths, tmp_path, every_s, on_disk
):
    train, valid, normalizer, classes = digits(digits_paths)
    path = tmp_path / "train.pt"
    watch = OnDisk(path)
    callbacks = (Checkpoint(path, "id", "run", every_s), watch)
    fit(
        small_cnn(classes, 0),
        train,
        valid,
        replace(TRAIN, epochs=3),
        normalizer,
        0,
        False,
        callbacks,
    )
    assert watch.epochs == on_disk
    assert load_checkpoint(path, "id")["epoch"] == 3


def test_a_missing_corrupt_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "train.pt"
    with pytest.raises(StagewiseError, match=r"no checkpoint at .*train without train.resume"):
        load_checkpoint(path, "id")
    path.write_bytes(b"\x80\x02 half a checkpoint")
    with pytest.raises(StagewiseError, match=r"is unreadable .*train without train.resume"):
        load_checkpoint(path, "id")
    torch.save({"epoch": 1}, path)
    with pytest.raises(StagewiseError, match="not a stagewise checkpoint"):
        load_checkpoint(path, "id")
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=2)
    state = FitState(model, torch.Generator(), 2, 1, [], optimizer, scheduler)
    Checkpoint(path, "other-config", "run").after_epoch(state)
    with pytest.raises(StagewiseError, match="another configuration or other data"):
        load_checkpoint(path, "id")


def test_fine_tune_trains_the_head_and_batchnorm_first_then_everything_at_discriminative_lrs(
    digits_paths,
):
    train, valid, normalizer, classes = digits(digits_paths)
    model = small_cnn(classes, seed=0)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = replace(TRAIN, epochs=1)
    watch = Watch()
    state = fit(model, train, valid, cfg, normalizer, 0, pretrained=True, callbacks=(watch,))
    assert state.epoch == 2  # freeze_epochs + epochs
    frozen = watch.weights[1]
    assert torch.equal(frozen["0.0.weight"], initial["0.0.weight"])  # a body conv: frozen
    assert not torch.equal(frozen["0.1.weight"], initial["0.1.weight"])  # its BatchNorm: trained
    (head_weight,) = [k for k in head_keys(model) if k.endswith("weight")]
    assert not torch.equal(frozen[head_weight], initial[head_weight])  # the head: trained
    assert not torch.equal(watch.weights[2]["0.0.weight"], frozen["0.0.weight"])  # unfrozen
    peaks = [group["max_lr"] for group in state.optimizer.param_groups]
    assert peaks == pytest.approx(discriminative_lrs(cfg.lr / 2, 100, 3))
    assert peaks[0] == pytest.approx(cfg.lr / 200) and peaks[-1] == pytest.approx(cfg.lr / 2)


def test_layer_groups_hold_every_parameter_once_with_the_head_last():
    model = build_model(ModelSpec("resnet18", list("ab"), 3, 32, [0.5] * 3, [0.2] * 3))
    groups = layer_groups(model, 3)
    assert len(groups) == 3 and groups[-1] == [model.fc.weight, model.fc.bias]
    ids = [id(p) for group in groups for p in group]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())


def result(epoch: int, train_loss: float, valid_loss: float) -> EpochResult:
    scores = {"valid_accuracy": 1 - valid_loss, "valid_error_rate": valid_loss}
    return EpochResult(epoch, train_loss, valid_loss, scores, 0.1, 1.0)


def test_early_stopping_stops_when_the_monitor_stalls_and_keep_best_restores_the_best_epoch():
    losses = [0.9, 0.5, 0.6, 0.7]
    history = [result(i + 1, 1.0, v) for i, v in enumerate(losses)]
    assert epochs_since_best(history, "valid_loss") == 2
    assert epochs_since_best(history, "valid_accuracy") == 2
    model = torch.nn.Linear(1, 1)
    state = FitState(model, torch.Generator(), total_epochs=10)
    stopping, best = EarlyStopping("valid_loss", patience=2), KeepBest("valid_loss")
    for row in history:
        with torch.no_grad():
            model.weight.fill_(row.epoch)
        state.epoch = row.epoch
        state.history.append(row)
        best.after_epoch(state)
        stopping.after_epoch(state)
        assert state.stop == (row.epoch == 4)
    best.after_fit(state)
    assert state.best["epoch"] == 2 and model.weight.item() == 2.0


def test_the_loop_ends_when_a_callback_says_stop(digits_paths):
    train, valid, normalizer, classes = digits(digits_paths)

    class StopAfterTwo(Callback):
        def after_epoch(self, state: FitState) -> None:
            state.stop = state.epoch == 2

    state = fit(
        small_cnn(classes, 0), train, valid, TRAIN, normalizer, 0, callbacks=(StopAfterTwo(),)
    )
    assert state.epoch == 2 and len(state.history) == 2


def test_overfitting_is_flagged_once_when_valid_loss_rises_while_train_loss_falls():
    rows = [(1.0, 0.50), (0.8, 0.40), (0.6, 0.45), (0.5, 0.50), (0.4, 0.55), (0.3, 0.60)]
    history = [result(i + 1, t, v) for i, (t, v) in enumerate(rows)]
    assert not overfitting_since(history[:4], 3)
    assert overfitting_since(history[:5], 3)
    assert not overfitting_since(history[:5], 0)
    flagged: list[int] = []
    watch = OverfitWatch(3, flagged.append)
    state = FitState(torch.nn.Linear(1, 1), torch.Generator(), total_epochs=6)
    for row in history:
        state.history.append(row)
        state.epoch = row.epoch
        watch.after_epoch(state)
    assert flagged == [5]


def test_a_sound_model_overfits_one_batch_and_a_broken_setup_fails_loudly(digits_paths):
    train, _, normalizer, classes = digits(digits_paths)
    losses = overfit_one_batch(small_cnn(classes, 0), train, TRAIN, normalizer, seed=0)
    assert losses[-1] < 0.05 < losses[0]
    with pytest.raises(StagewiseError, match="could not overfit one batch of 64 images"):
        overfit_one_batch(small_cnn(classes, 0), train, replace(TRAIN, lr=1e-7), normalizer, 0, 30)


def test_valley_picks_the_middle_of_the_longest_descent():
    lrs = [10 ** (i / 10 - 6) for i in range(50)]
    losses = [2.0] * 10 + [2.0 - 0.05 * i for i in range(30)] + [0.5 + 0.3 * i for i in range(10)]
    suggestion = valley(lrs, losses)
    assert lrs[10] < suggestion < lrs[39]


def test_lr_find_sweeps_growing_rates_and_suggests_one_on_the_descent(digits_paths):
    train, _, normalizer, classes = digits(digits_paths)
    found = lr_find(small_cnn(classes, 0), train, TRAIN, normalizer, seed=0, pretrained=False)
    assert found.lrs == sorted(found.lrs) and found.lrs[0] == pytest.approx(1e-7)
    assert len(found.lrs) <= 100 and found.lrs[-1] <= 10
    assert 1e-5 < found.suggestion < 1
    at = found.lrs.index(found.suggestion)
    assert found.losses[at] < found.losses[0]


def test_deterministic_algorithms_are_switched_on_and_back_off():
    import torch

    from pipeline.model.device import seed_everything

    seed_everything(0, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    seed_everything(0)
    assert not torch.are_deterministic_algorithms_enabled()


def test_a_diverging_training_stops_in_one_line_fails_its_run_and_keeps_the_model(project):
    models = project.root / "models"
    before = {path.name: path.read_bytes() for path in models.iterdir()}
    # lr 1000 on digits: epoch 1 ends with finite weights, a later one's loss turns NaN
    result = project.run("python", "-m", "stages.train", "train.lr=1000", "train.epochs=3",
                         "train.pct_start=0.5", "train.checkpoint_every_s=0", check=False)  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    last = (result.stdout + result.stderr).strip().splitlines()[-1]
    found = re.fullmatch(
        r"error: train: the training loss became nan at epoch (\d+), batch \d+; "
        r"lower train\.lr or check the targets",
        last,
    )
    assert found and "Traceback" not in result.stderr, last
    assert {path.name: path.read_bytes() for path in models.iterdir()} == before
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("stagewise")
    (run,) = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )
    assert run.info.status == "FAILED" and run.data.params["train.lr"] == "1000.0"
    assert run.data.tags["error"].startswith("Diverged: train: the training loss became nan")
    # the last good epoch's checkpoint, not the NaN weights
    diverged_at = int(found.group(1))
    assert diverged_at >= 2
    saved = torch.load(project.root / "checkpoints/train.pt", weights_only=True)
    assert saved["epoch"] == diverged_at - 1 and saved["run_id"] == run.info.run_id
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_weights_broken_by_an_epochs_last_step_stop_training_on_the_validation_loss(
    digits_paths,
):
    train, valid, normalizer, classes = digits(digits_paths)
    # one step per epoch: its training loss is the initial weights', finite
    cfg = replace(TRAIN, epochs=2, batch_size=1024, lr=1e9)
    with pytest.raises(Diverged, match=r"validation loss became (nan|inf) at epoch 1; lower"):
        fit(small_cnn(classes, seed=0), train, valid, cfg, normalizer, seed=0)


def test_statistics_that_overflow_behind_finite_losses_stop_training(digits_paths):
    train, valid, normalizer, classes = digits(digits_paths)
    # BatchNorm normalizes by running variances that became inf: the losses stay finite
    cfg = replace(TRAIN, epochs=3, lr=1000)
    with pytest.raises(
        Diverged, match=r"weights became NaN or infinite at epoch 1 \(.*running_var\)"
    ):
        fit(small_cnn(classes, seed=0), train, valid, cfg, normalizer, seed=0)
