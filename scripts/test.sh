#!/usr/bin/env bash
# The test command: set up the environment, lint, then run the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k split`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PATH="$(bash scripts/env.sh)/bin:$PATH"
export PATH
ruff check .
ruff format --check .
# Test files run in parallel, one file per worker at a time (their module fixtures share a
# project copy); `-n 0` runs everything in this process. Files start in tests/conftest.py's
# order (FIRST: long ones first), not xdist's most-tests-first. One worker per core: one more
# was slower on 2 cores (11m53s against 10m24s for nearly the same suite).
python -m pytest -n auto --dist loadfile --no-loadscope-reorder "$@"
