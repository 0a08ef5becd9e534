"""ingest: decode the configured source once into the manifest + uint8 array store."""

import logging

from pipeline.core.config import Config
from pipeline.core.io import atomic_write, write_json
from pipeline.core.paths import Paths
from pipeline.data.ingest import ingest
from pipeline.data.store import write_manifest
from pipeline.tasks.kinds import task_kind
from stages.common import entrypoint

log = logging.getLogger("stagewise")


def run(cfg: Config, paths: Paths = Paths()) -> None:
    kind = task_kind(cfg.task)
    # The previous outputs (dvc.yaml keeps them: persist) are the pool of reusable images.
    result = ingest(cfg.data, paths.images, kind, previous_manifest=paths.manifest)
    atomic_write(paths.manifest, lambda tmp: write_manifest(tmp, result.manifest, result.metadata))
    write_json(paths.ingest_report, result.report)
    report = result.report
    log.info(
        "ingested %d images (%d decoded, %d reused), %d %s (%d files or table rows skipped, "
        "with reasons in %s)",
        report["images"],
        report["decoded"],
        report["reused"],
        len(report[kind.counts_key]),
        kind.counts_key,
        len(report["bad_files"]),
        paths.ingest_report,
    )


main = entrypoint(run)

if __name__ == "__main__":
    main()
