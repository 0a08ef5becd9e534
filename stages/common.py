"""Start-up shared by every stage: Hydra on the tracked params.yaml, a schema check, and
one-line errors instead of tracebacks."""

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.config import Config
from pipeline.errors import StagewiseError
from pipeline.paths import PROJECT_ROOT

log = logging.getLogger("stagewise")

# A single stage run writes into the project (DVC's outs) and leaves no Hydra output folder;
# hydra.main offers no other way to set this than overrides. Multirun keeps Hydra's per-job folders.
SINGLE_RUN_OVERRIDES = ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout"]


def validated(cfg: DictConfig) -> Config:
    """params.yaml checked against pipeline.config's schema: unknown, missing or mistyped
    keys fail here, before any work."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), cfg))
    except OmegaConfBaseException as e:
        first_line = str(e).splitlines()[0]
        key = f" (key {e.full_key})" if getattr(e, "full_key", None) else ""
        raise StagewiseError(
            f"config: {first_line}{key}; fix the override, or fix conf/ and recompose "
            "params.yaml (python scripts/compose_params.py)"
        ) from None


def is_multirun() -> bool:
    return HydraConfig.get().mode.name == "MULTIRUN"


def job_dir() -> Path:
    """Where this job writes: the project root for a single run, Hydra's job folder in a sweep."""
    return Path(HydraConfig.get().runtime.output_dir) if is_multirun() else Path.cwd()


def entrypoint(run: Callable[[Config], Any]) -> Callable[[], None]:
    """Wrap run(cfg) as a Hydra command line reading params.yaml."""

    @hydra.main(config_path=str(PROJECT_ROOT), config_name="params", version_base=None)
    def main(cfg: DictConfig) -> Any:
        try:
            return run(validated(cfg))
        except StagewiseError as e:
            log.error("error: %s", e)
            sys.exit(2)

    def cli() -> None:
        if not {"-m", "--multirun"} & set(sys.argv[1:]):
            sys.argv[1:1] = SINGLE_RUN_OVERRIDES
        main()

    return cli
