"""Start-up shared by every stage: Hydra on the tracked params.yaml, a schema check, and
one-line errors instead of tracebacks."""

import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.core.config import Config
from pipeline.core.errors import StagewiseError
from pipeline.core.paths import PROJECT_ROOT
from pipeline.core.workspace import ParamsGuard

log = logging.getLogger("stagewise")

# A single stage run writes into the project (DVC's outs) and leaves no Hydra output folder;
# hydra.main offers no other way to set this than overrides. Multirun keeps Hydra's per-job
# folders and gets one MLflow parent run for the sweep (stages/sweep.py).
# conf/ is on the search path so that its groups (model=resnet18, train=fine_tune) and the
# launcher/sweeper presets in conf/hydra/ can be chosen on a stage's command line.
CONF = PROJECT_ROOT / "conf"
SEARCH_PATH = f"hydra.searchpath=[file://{CONF}]"
SINGLE_RUN_OVERRIDES = [
    "hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout", SEARCH_PATH,
]  # fmt: skip
MULTIRUN_OVERRIDES = ["+hydra.callbacks.sweep_run._target_=stages.sweep.SweepRun", SEARCH_PATH]
# Jobs of a sweep that failed: a failure must not stop the others, but the sweep exits non-zero.
failed_jobs: list[str] = []
# params.yaml as this stage's command line found it (set by entrypoint; None in tests that
# call a stage's run() directly).
params_guard: ParamsGuard | None = None


def check_params() -> None:
    """Stop before writing outputs when params.yaml is no longer the one this stage started
    on (another run in the workspace rewrote it): see pipeline/core/workspace.py."""
    if params_guard is not None:
        params_guard.check()


def validated(cfg: DictConfig) -> Config:
    """params.yaml checked against pipeline.core.config's schema: unknown, missing or mistyped
    keys, and values outside an Enum's choices, fail here, before any work (and in
    scripts/compose_params.py, before params.yaml is written)."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), cfg))
    except OmegaConfBaseException as e:
        first_line = str(e).splitlines()[0]
        key = f"{e.full_key}: " if getattr(e, "full_key", None) else ""
        raise StagewiseError(
            f"config: {key}{first_line}; fix the override, or fix conf/ and recompose "
            "params.yaml (python scripts/compose_params.py)"
        ) from None


def is_multirun() -> bool:
    return HydraConfig.get().mode.name == "MULTIRUN"


def sweep_job() -> str | None:
    """How the log names this multirun job (its overrides), or None outside a sweep."""
    return f"job {' '.join(HydraConfig.get().overrides.task)}" if is_multirun() else None


def job_dir() -> Path:
    """Where this job writes: the project root for a single run, Hydra's job folder in a sweep."""
    return Path(HydraConfig.get().runtime.output_dir) if is_multirun() else Path.cwd()


def upstream_overrides(arguments: list[str]) -> list[str]:
    """Overrides of data.* or split.* keys or of the task: those decide the upstream stages'
    outputs (ingest reads labels as the task says)."""

    def group(argument: str) -> str:
        return argument.split("=", 1)[0].lstrip("+~").split(".")[0]

    return [arg for arg in arguments if "=" in arg and group(arg) in ("data", "split", "task")]


def config_groups() -> set[str]:
    return {p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra"}


def group_choices(arguments: list[str], params: Path = PROJECT_ROOT / "params.yaml") -> list[str]:
    """`model=resnet18` means conf/model/resnet18.yaml, as in `dvc exp run -S`: params.yaml
    has no defaults list, so the group's config is merged over its keys (`+model=...`), and
    then the task's settings of that group, as conf/config.yaml applies the task last."""
    groups, chosen = config_groups(), []
    for arg in arguments:
        group = arg.split("=", 1)[0]
        chosen += (
            [f"+{arg}", *task_settings(group, arguments, params)] if group in groups else [arg]
        )
    return chosen


def task_settings(group: str, arguments: list[str], params: Path) -> list[str]:
    """conf/task/<task>.yaml's keys in group, as overrides: train=fine_tune would otherwise
    bring back single-label's label smoothing and, for regression, the augmentations that move
    pixels. Keys the command line sets itself (or a part of them) are left to it."""
    task = next((arg.split("=", 1)[1] for arg in arguments if arg.startswith("task=")), None)
    overlay_file = CONF / "task" / f"{task or OmegaConf.load(params).task}.yaml"
    if not overlay_file.exists():  # no such task: Hydra says so, listing the choices
        return []
    overlay = OmegaConf.load(overlay_file)
    if group == "task" or group not in overlay:
        return []
    given = {arg.split("=", 1)[0].lstrip("+~") for arg in arguments if "=" in arg}
    given -= config_groups()  # choices of a group's file, not settings of its keys
    return [
        f"{key}={json.dumps(value)}"
        for key, value in leaves(OmegaConf.to_container(overlay[group]), group)
        if not any(key == g or key.startswith(f"{g}.") for g in given)
    ]


def leaves(node: Any, key: str) -> list[tuple[str, Any]]:
    """{"augment": {"flip": False}} under "train" -> [("train.augment.flip", False)]."""
    if not isinstance(node, dict):
        return [(key, node)]
    return [leaf for k, v in node.items() for leaf in leaves(v, f"{key}.{k}")]


def exit_on_sigterm() -> None:
    """`kill` and schedulers send SIGTERM: exit through Python, so open MLflow runs end KILLED."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def entrypoint(run: Callable[[Config], Any]) -> Callable[[], None]:
    """Wrap run(cfg) as a Hydra command line reading params.yaml."""

    @hydra.main(config_path=str(PROJECT_ROOT), config_name="params", version_base=None)
    def main(cfg: DictConfig) -> Any:
        if os.environ.get("SUBMITIT_EXECUTOR"):
            # A SLURM job of hydra/launcher=slurm: submitit ignores SIGTERM ("Bypassing signal
            # SIGTERM"; it requeues on SIGUSR2), but scancel and the time limit send SIGTERM,
            # then SIGKILL after KillWait, which would leave the run RUNNING.
            exit_on_sigterm()
        try:
            check_params()  # never start on another run's parameters
            result = run(validated(cfg))
            check_params()  # nor finish on them: DVC would record the other run's params
            return result
        except StagewiseError as e:
            log.error("error: %s", e)
            if not is_multirun():
                sys.exit(2)
            failed_jobs.append(str(e))  # counted by the sweep; the other jobs go on
            return None

    def cli() -> None:
        global params_guard
        params_guard = ParamsGuard.start(PROJECT_ROOT, Path(sys.argv[0]).stem)
        multirun = bool({"-m", "--multirun"} & set(sys.argv[1:]))
        if multirun and (upstream := upstream_overrides(sys.argv[1:])):
            log.error(
                "error: a stage sweep reuses the ingested data and split, so it cannot sweep %s; "
                "use DVC experiments, e.g. dvc exp run --queue -S %s",
                ", ".join(upstream),
                upstream[0],
            )
            sys.exit(2)
        exit_on_sigterm()
        sys.argv[1:] = group_choices(sys.argv[1:])
        if multirun:
            sys.argv += MULTIRUN_OVERRIDES  # after the user's: argparse wants them after -m
        else:
            sys.argv[1:1] = SINGLE_RUN_OVERRIDES  # before the user's, who may override them
        main()
        if failed_jobs:
            log.error("error: %d job(s) of the sweep failed", len(failed_jobs))
            sys.exit(2)

    return cli
