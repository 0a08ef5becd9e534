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
# order (FIRST: long ones first), not xdist's most-tests-first. One worker more than cores:
# the end-to-end tests wait on subprocesses and disk, so a spare worker keeps the cores busy
# (2 cores: 10m10s instead of ~12 min for the same suite).
python -m pytest -n "$(($(nproc) + 1))" --dist loadfile --no-loadscope-reorder "$@"
