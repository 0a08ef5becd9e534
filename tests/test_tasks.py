"""The tasks (pipeline/tasks): how labels are read, split and encoded, the heads' losses and
epoch metrics against scikit-learn's, and the model fields each task keeps."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn import metrics as sk

from pipeline.core.errors import StagewiseError
from pipeline.data.ingest import ingest
from pipeline.data.split import SplitRows, assign_splits, split_report
from pipeline.evaluate.metrics import multilabel_metrics, regression_metrics
from pipeline.tasks.heads import MultiLabelHead, make_head
from pipeline.tasks.kinds import MultiLabel, Regression, task_kind
from pipeline.train.learner import model_spec
from tests.conftest import compose_config

RNG = np.random.default_rng(0)


def table_project(tmp_path: Path, rows: list[dict]) -> Path:
    """PNG files (distinct bytes) and a CSV listing them with the given extra columns."""
    for i, row in enumerate(rows):
        Image.fromarray(RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        row["path"] = f"{i}.png"
    pd.DataFrame(rows).to_csv(tmp_path / "table.csv", index=False)
    return tmp_path / "table.csv"


def ingested(tmp_path: Path, task: str, rows: list[dict], *overrides: str):
    table = table_project(tmp_path, rows)
    cfg = compose_config(
        f"task={task}",
        "data=table",
        f"data.root={tmp_path}",
        f"data.table={table}",
        "data.image_size=6",
        *overrides,
    )
    return ingest(cfg.data, tmp_path / "images.npy", task_kind(cfg.task))


def test_multilabel_labels_are_delimited_sets_and_an_empty_cell_is_none(tmp_path):
    result = ingested(
        tmp_path, "multilabel",
        [{"label": "dog;cat"}, {"label": ""}, {"label": " cat ;"}, {"label": "bird"}],
    )  # fmt: skip
    labels = dict(
        zip(
            result.manifest["path"].map(lambda p: Path(p).name),
            result.manifest["label"],
            strict=True,
        )
    )
    assert [list(labels[f"{i}.png"]) for i in range(4)] == [["cat", "dog"], [], ["cat"], ["bird"]]
    assert result.report["classes"] == {"bird": 1, "cat": 2, "dog": 1, "(none)": 1}
    assert result.report["bad_files"] == []


def test_multilabel_from_a_regex_takes_every_match_and_from_folders_splits_the_name():
    cfg = compose_config("task=multilabel", "data=folder", "data.root=.", "data.label=regex",
                         "data.label_regex='([a-z]+)-'")  # fmt: skip
    label = MultiLabel().labeller(cfg.data, lambda: None)
    assert label(Path("x/dog-cat-7.png"), None) == ["cat", "dog"]
    assert label(Path("x/7.png"), None) == []
    parent = MultiLabel().labeller(replace(cfg.data, label="parent"), lambda: None)
    assert parent(Path("cat;dog/1.png"), None) == ["cat", "dog"]
    with pytest.raises(StagewiseError, match="needs one group"):
        MultiLabel().labeller(replace(cfg.data, label_regex="^[A-Z]"), lambda: None)


def test_regression_reads_the_target_columns_and_lists_rows_without_a_number(tmp_path):
    rows = [{"x": 1.5, "y": 2}, {"x": "", "y": 3}, {"x": "left", "y": 1}, {"x": 4, "y": 5}]
    result = ingested(
        tmp_path, "regression", rows, "data.targets=[x,y]", "data.max_bad_fraction=0.5"
    )
    assert list(result.manifest["label"]) == [{"x": 1.5, "y": 2.0}, {"x": 4.0, "y": 5.0}]
    reasons = sorted(entry["reason"] for entry in result.report["bad_files"])
    assert reasons == [
        "no value in target column 'x'",
        "target column 'x' holds 'left', not a number",
    ]
    assert result.report["targets"]["x"]["max"] == 4.0


@pytest.mark.parametrize(
    ("task", "overrides", "message"),
    [
        ("regression", [], "task=regression needs data.targets"),
        ("regression", ["data.targets=[x,z]"], r"missing column\(s\) z; expected path,x,z"),
        ("multilabel", ["data=digits"], "data=digits has one class per image: task=multilabel"),
    ],
)
def test_a_task_without_its_data_fails_in_one_line(tmp_path, task, overrides, message):
    table = table_project(tmp_path, [{"x": 1.0, "y": 2.0, "label": "a"}] * 2)
    base = ["data=table", f"data.root={tmp_path}", f"data.table={table}", "data.image_size=6"]
    cfg = compose_config(f"task={task}", *base, *overrides)
    with pytest.raises(StagewiseError, match=message) as raised:
        ingest(cfg.data, tmp_path / "images.npy", task_kind(cfg.task))
    assert "\n" not in str(raised.value)


def label_sets(n: int, seed: int = 0) -> pd.DataFrame:
    """A manifest of n images with 0-3 of 6 labels, the rarest label on 12 images."""
    rng = np.random.default_rng(seed)
    names = ["a", "b", "c", "d", "e", "f"]
    labels = [sorted(rng.choice(names[:5], rng.integers(0, 4), replace=False)) for _ in range(n)]
    for i in rng.choice(n, 12, replace=False):
        labels[i] = sorted({*labels[i], "f"})
    return pd.DataFrame({"id": [f"{i:04d}" for i in range(n)], "label": labels,
                         "group": None, "sha256": [str(i) for i in range(n)]})  # fmt: skip


def test_the_multilabel_split_keeps_every_label_in_every_split_and_is_seeded():
    manifest = label_sets(400)
    cfg = compose_config("task=multilabel").split
    split = assign_splits(manifest, cfg, MultiLabel())
    assert split.equals(assign_splits(manifest.sample(frac=1, random_state=1), cfg, MultiLabel()))
    report = split_report(manifest, split, cfg, MultiLabel())["splits"]
    assert {k: v["images"] for k, v in report.items()} == {"train": 240, "valid": 80, "test": 80}
    # the rarest label (12 images) keeps its share: about 2.4 of them in valid and in test
    assert 2 <= report["valid"]["classes"]["f"] <= 3 and 2 <= report["test"]["classes"]["f"] <= 3
    for name in ("a", "b", "c", "d", "e"):
        total = sum(part["classes"][name] for part in report.values())
        assert abs(report["train"]["classes"][name] - 0.6 * total) <= 2


def test_the_regression_split_is_a_seeded_shuffle_and_reports_target_statistics():
    n = 50
    manifest = pd.DataFrame({"id": [f"{i:02d}" for i in range(n)], "group": None,
                             "label": [{"x": float(i)} for i in range(n)],
                             "sha256": [str(i) for i in range(n)]})  # fmt: skip
    cfg = compose_config("task=regression").split
    split = assign_splits(manifest, cfg, Regression())
    assert split["split"].value_counts().to_dict() == {"train": 30, "valid": 10, "test": 10}
    assert split.equals(assign_splits(manifest, cfg, Regression()))
    train = split_report(manifest, split, cfg, Regression())["splits"]["train"]["targets"]["x"]
    assert 0 <= train["min"] < train["mean"] < train["max"] <= 49


def test_multilabel_epoch_metrics_match_scikit_learn():
    logits = torch.randn(64, 5)
    targets = (torch.rand(64, 5) < 0.3).float()
    targets[:4] = 0  # images with no label, some predicted to have none
    logits[:2] = -5
    head = MultiLabelHead(0.4)
    scores = head.epoch_scores(logits, targets)
    predicted = (torch.sigmoid(logits) >= 0.4).int().numpy()
    actual = targets.int().numpy()
    expected_f1 = sk.f1_score(actual, predicted, average="samples", zero_division=1)
    assert scores["valid_f1_samples"] == pytest.approx(expected_f1)
    assert scores["valid_accuracy_multi"] == pytest.approx(1 - sk.hamming_loss(actual, predicted))
    report = multilabel_metrics(actual, torch.sigmoid(logits).numpy(), list("abcde"), 0.4)
    assert report["f1_samples"] == pytest.approx(expected_f1)
    assert report["accuracy_multi"] == pytest.approx(scores["valid_accuracy_multi"])
    # the loss is BCE with logits, on every label
    expected = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), targets)
    assert head.loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_best_threshold_is_the_one_with_the_best_f1():
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    probability = torch.tensor([[0.3, 0.1], [0.2, 0.35], [0.32, 0.4], [0.1, 0.2]])
    best = MultiLabelHead.best_threshold(torch.logit(probability), targets)
    assert 0.2 < best <= 0.3  # everything right from just above 0.2 up to 0.3
    assert (
        MultiLabelHead(best).epoch_scores(torch.logit(probability), targets)["valid_f1_samples"]
        == 1.0
    )


def test_regression_learns_standardized_targets_answers_in_their_units_and_matches_sklearn():
    values = np.array([[10.0, -3.0], [20.0, 0.0], [30.0, 3.0], [40.0, 6.0]], dtype=np.float32)
    evaluation = compose_config().eval
    fields = Regression().model_fields(values, evaluation, None)
    assert fields["target_mean"] == pytest.approx([25.0, 1.5])
    head = make_head(**fields)
    standardized = (torch.from_numpy(values) - 25.0) / torch.tensor(fields["target_std"])
    standardized[:, 1] = (torch.from_numpy(values[:, 1]) - 1.5) / fields["target_std"][1]
    assert head.loss(standardized, torch.from_numpy(values)).item() == pytest.approx(0, abs=1e-10)
    assert head.predict(standardized).numpy() == pytest.approx(values, rel=1e-5)
    off = standardized + torch.tensor([[0.1, -0.2]])
    scores = head.epoch_scores(off, torch.from_numpy(values))
    expected = regression_metrics(values, head.predict(off).numpy(), ["x", "y"])
    assert scores["valid_rmse"] == pytest.approx(expected["rmse"], rel=1e-5)
    assert scores["valid_mae"] == pytest.approx(expected["mae"], rel=1e-5)
    assert scores["valid_r2"] == pytest.approx(expected["r2"], rel=1e-5)
    assert expected["per_class"]["x"]["r2"] == pytest.approx(
        sk.r2_score(values[:, 0], head.predict(off).numpy()[:, 0]), rel=1e-5
    )


def test_y_range_bounds_the_answers_in_the_targets_units():
    values = np.array([[2.0], [4.0], [6.0]], dtype=np.float32)
    fields = Regression().model_fields(values, compose_config().eval, [0.0, 8.0])
    head = make_head(**fields)
    answers = head.predict(torch.tensor([[-50.0], [0.0], [50.0]]))[:, 0]
    assert answers[0] == pytest.approx(0.0, abs=1e-4) and answers[2] == pytest.approx(8.0, abs=1e-4)
    assert answers[1] == pytest.approx(4.0, abs=1e-4)  # sigmoid(0): the middle of the range


@pytest.mark.parametrize(
    ("task", "overrides", "message"),
    [
        ("single_label", ["model.y_range=[0,1]"], "model.y_range=.* task=single_label has none"),
        (
            "regression",
            ["model.y_range=[3,4]"],
            r"model.y_range=\[3.0, 4.0\] excludes some train targets",
        ),
        (
            "regression",
            ["eval.choose_threshold=true"],
            "eval.choose_threshold=true picks a multi-label",
        ),
        ("multilabel", ["eval.threshold=1.5"], r"eval.threshold=1.5: must be a probability"),
    ],
)
def test_model_settings_that_do_not_fit_the_task_fail_in_one_line(task, overrides, message):
    cfg = compose_config(f"task={task}", *overrides)
    y_range = list(cfg.model.y_range) if cfg.model.y_range is not None else None
    with pytest.raises(StagewiseError, match=message):
        task_kind(cfg.task).model_fields(np.array([[1.0], [5.0]]), cfg.eval, y_range)


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_label_smoothing_is_off_for_tasks_without_classes_and_refused_when_set(task):
    """The default train.label_smoothing (0.1) softens a softmax's targets: the other tasks'
    configs turn it off, so their runs do not log a setting that did nothing."""
    targets = np.array([[1.0], [5.0]], dtype=np.float32)
    train = SplitRows(np.arange(2), np.arange(2), targets, ["y"], Path("-"), (8, 8, 1))
    stats = {"mean": [0.5], "std": [0.2]}
    assert model_spec(compose_config(f"task={task}"), train, stats).task == task
    cfg = compose_config(f"task={task}", "train.label_smoothing=0.1")
    with pytest.raises(StagewiseError, match=f"label_smoothing=0.1 .*task={task} .*=0$"):
        model_spec(cfg, train, stats)
    assert compose_config().train.label_smoothing == 0.1


def test_a_metric_the_task_lacks_fails_naming_the_task_and_its_metrics():
    with pytest.raises(
        StagewiseError,
        match="task=regression has the epoch metrics train_loss, valid_loss, valid_rmse",
    ):
        task_kind("regression").check_monitor("compare.metric", "valid_error_rate")
    assert compose_config("task=regression").compare.metric == "valid_rmse"
    assert compose_config("task=multilabel").compare.metric == "valid_f1_samples"
    assert compose_config().compare.metric == "valid_error_rate"


def quadrant_task(n: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8x8 images with bright quadrants: (images, which quadrants are bright (labels), and how
    bright the top-left one is (a target))."""
    rng = np.random.default_rng(seed)
    on = rng.random((n, 4)) < 0.4
    images = rng.integers(0, 40, (n, 8, 8, 1), dtype=np.uint8)
    level = rng.uniform(80, 250, n)
    for q, (rows, cols) in enumerate([(slice(0, 4), slice(0, 4)), (slice(0, 4), slice(4, 8)),
                                      (slice(4, 8), slice(0, 4)), (slice(4, 8), slice(4, 8))]):  # fmt: skip
        images[on[:, q], rows, cols, 0] = level[on[:, q], None, None].astype(np.uint8)
    return images, on.astype(np.float32), np.where(on[:, :1], level[:, None], 20).astype(np.float32)


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_lr_find_and_fit_train_each_task_with_its_head(task):
    from pipeline.model.device import Batches
    from pipeline.model.networks import small_cnn
    from pipeline.model.preprocess import Normalizer
    from pipeline.train.loop import fit
    from pipeline.train.lr_find import lr_find

    images, labels, level = quadrant_task()
    targets = labels if task == "multilabel" else level
    cfg = compose_config(f"task={task}", "train.epochs=4", "train.batch_size=32")
    fields = task_kind(task).model_fields(targets[:192], cfg.eval, None)
    head = make_head(**fields)
    device = torch.device("cpu")
    train = Batches.from_numpy(images[:192], targets[:192], device)
    valid = Batches.from_numpy(images[192:], targets[192:], device)
    normalizer = Normalizer.create([0.2], [0.3], device)
    torch.manual_seed(0)
    found = lr_find(small_cnn(1, targets.shape[1], [8, 16], 0.0), train, cfg.train, normalizer,
                    seed=0, pretrained=False, head=head)  # fmt: skip
    assert 1e-6 < found.suggestion < 10 and np.isfinite(found.losses).all()
    state = fit(small_cnn(1, targets.shape[1], [8, 16], 0.0), train, valid, cfg.train, normalizer,
                seed=0, head=head)  # fmt: skip
    history = state.history
    assert history[-1].train_loss < history[0].train_loss
    assert list(history[-1].scores) == list(task_kind(task).epoch_metrics)
    main = task_kind(task).main_metric
    # predicting no label scores F1 0.13 here (the share of images with none); the mean, RMSE 74
    better = history[-1].value(main) > 0.6 if task == "multilabel" else history[-1].value(main) < 40
    assert better, history[-1].scores


def test_a_multilabel_group_split_spreads_groups_of_images_without_labels_too():
    manifest = label_sets(400)
    manifest["group"] = [f"g{i % 40:02d}" for i in range(400)]
    empty = manifest["group"].isin([f"g{i:02d}" for i in range(10)])
    manifest.loc[empty, "label"] = pd.Series([[]] * int(empty.sum()), index=manifest.index[empty])
    cfg = compose_config("task=multilabel", "split=group").split
    split = assign_splits(manifest, cfg, MultiLabel()).set_index("id")["split"]
    where = split.loc[manifest.loc[empty, "id"]].value_counts()
    assert set(where.index) == {"train", "valid", "test"}  # not all in the least full split


def test_targets_beyond_float32_are_refused_per_row_and_huge_ones_train_without_overflow(
    tmp_path,
):
    # 1e308 and -1e39 are finite floats but inf once cast to float32, the training dtype
    rows = [{"x": x} for x in (1e308, -1e39, 3e38, 3e38, 3e38, -3e38)]
    result = ingested(tmp_path, "regression", rows, "data.targets=[x]", "data.max_bad_fraction=0.5")
    reasons = {entry["row"]: entry["reason"] for entry in result.report["bad_files"]}
    assert sorted(reasons) == [1, 2]
    assert all("beyond the range of float32" in reason for reason in reasons.values())
    kind = task_kind("regression")
    targets = kind.encode(result.manifest["label"], ["x"])
    assert np.isfinite(targets).all()
    # standardizing -3e38 with the mean 1.5e38 overflows float32 (-4.5e38); the squares of
    # the metrics do from 1.9e19 on
    head = make_head(**kind.model_fields(targets, compose_config("task=regression").eval, None))
    outputs, actual = torch.zeros(len(targets), 1), torch.from_numpy(targets)
    assert torch.isfinite(head.loss(outputs, actual))
    assert np.isfinite(list(head.epoch_scores(outputs, actual).values())).all()


@pytest.mark.parametrize("max_bad_fraction", ["0.05", "1.0"])
def test_a_table_without_one_usable_target_names_the_column_and_rows(tmp_path, max_bad_fraction):
    rows = [{"x": "n/a"}, {"x": ""}, {"x": "big"}, {"x": "n/a"}]
    with pytest.raises(StagewiseError) as raised:
        ingested(tmp_path, "regression", rows, "data.targets=[x]",
                 f"data.max_bad_fraction={max_bad_fraction}")  # fmt: skip
    message = str(raised.value)
    assert message.startswith("ingest: no usable image: 4 were refused for their target values")
    assert (
        "e.g. row 1 (0.png): target column 'x' holds 'n/a', not a number; "
        "row 2 (1.png): no value in target column 'x'; row 3 (2.png): target column 'x' holds "
        "'big', not a number; fix them" in message
    )
    assert "decoded" not in message and "\n" not in message


def test_multilabel_refuses_labels_that_never_vary_and_names_those_that_do_not(tmp_path, caplog):
    (tmp_path / "one").mkdir()
    with pytest.raises(StagewiseError, match=r"^ingest: no label varies across the images "
                       r"\(all 4 have exactly 'a', 'b'\)"):  # fmt: skip
        ingested(tmp_path / "one", "multilabel", [{"label": "a;b"} for _ in range(4)])
    (tmp_path / "two").mkdir()
    rows = [{"label": label} for label in ["a;b", "a"] * 3]
    result = ingested(tmp_path / "two", "multilabel", rows)
    assert result.report["constant_labels"] == ["a"]
    assert "warning: ingest: label(s) 'a' are on all the images or on none" in caplog.text


def test_multilabel_split_refuses_training_images_whose_labels_never_vary(tmp_path, caplog):
    labels = [["a", "b"]] * 4 + [["a"], ["b"]]  # the training images all have a and b
    manifest = pd.DataFrame({"id": [f"{i}" for i in range(6)], "label": labels, "group": None,
                             "sha256": [str(i) for i in range(6)]})  # fmt: skip
    listed = tmp_path / "split.csv"
    pd.DataFrame({"id": manifest["id"], "split": ["train"] * 4 + ["valid", "test"]}).to_csv(
        listed, index=False
    )
    cfg = compose_config("task=multilabel", "split=list", f"split.list_file={listed}").split
    with pytest.raises(StagewiseError, match=r"^split: no label varies across the training images"):
        assign_splits(manifest, cfg, MultiLabel())
    manifest.loc[3, "label"] = ["a"]  # b varies now, a does not
    split = assign_splits(manifest, cfg, MultiLabel())
    assert "warning: split: label(s) 'a' are on all the training images or on none" in caplog.text
    assert split_report(manifest, split, cfg, MultiLabel())["constant_labels"] == ["a"]
