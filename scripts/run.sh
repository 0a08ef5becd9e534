#!/usr/bin/env bash
# The main job: set up the environment, compose params.yaml from conf/, run every DVC stage
# that is out of date, and print the holdout test accuracy.
# Extra arguments are Hydra overrides applied to params.yaml, e.g. `bash scripts/run.sh train.epochs=5`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PATH="$(bash scripts/env.sh)/bin:$PATH"
export PATH
python scripts/compose_params.py "$@"
dvc repro
python scripts/summary.py
