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
# project copy); `-n 0` runs everything in this process. One worker more than cores: many
# tests wait on subprocesses, servers and SLURM (with one per core, 2 cores were 1.55 busy).
# Files start in tests/conftest.py's order (FIRST), not xdist's most-tests-first.
python -m pytest -n "$(($(nproc) + 1))" --dist loadfile --no-loadscope-reorder "$@"
