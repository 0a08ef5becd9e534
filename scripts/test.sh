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
# order (FIRST: long ones first), not xdist's most-tests-first. One worker per core: with one
# more, 2 cores ran the suite in 10m10s instead of ~12 min, but a timing check failed.
python -m pytest -n auto --dist loadfile --no-loadscope-reorder "$@"
