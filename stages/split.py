"""split: assign every image to train, valid or test (seeded, stratified)."""

import logging

from pipeline.core.config import Config
from pipeline.core.io import atomic_write, write_json
from pipeline.core.paths import Paths
from pipeline.data.split import assign_splits, enforce_leakage, split_report
from pipeline.data.store import load_manifest
from pipeline.tasks.kinds import task_kind
from stages.common import entrypoint

log = logging.getLogger("stagewise")


def run(cfg: Config, paths: Paths = Paths()) -> None:
    manifest = load_manifest(paths.manifest)
    kind = task_kind(cfg.task)
    split = assign_splits(manifest, cfg.split, kind)
    report = split_report(manifest, split, cfg.split, kind)
    enforce_leakage(report["leakage"], cfg.split.leakage)
    atomic_write(paths.split, lambda tmp: split.to_parquet(tmp, index=False))
    write_json(paths.split_report, report)
    counts = {name: part["images"] for name, part in report["splits"].items()}
    log.info("split %s", ", ".join(f"{name} {n}" for name, n in counts.items()))


main = entrypoint(run)

if __name__ == "__main__":
    main()
