"""normalize-stats: per-channel mean/std of the train split, shipped with every model."""

import logging

from pipeline.core.config import Config
from pipeline.core.io import write_json
from pipeline.core.paths import Paths
from pipeline.data.split import load_split_table, split_indices
from pipeline.data.stats import channel_stats
from pipeline.data.store import load_images, load_manifest
from stages.common import entrypoint

log = logging.getLogger("stagewise")


def run(cfg: Config, paths: Paths = Paths()) -> None:
    manifest = load_manifest(paths.manifest)
    train = split_indices(manifest, load_split_table(paths.split), "train")
    stats = channel_stats(load_images(paths.images), train)
    write_json(paths.normalize, stats)
    log.info("train-split statistics: mean %s, std %s", stats["mean"], stats["std"])


main = entrypoint(run)

if __name__ == "__main__":
    main()
