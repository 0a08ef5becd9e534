#!/usr/bin/env bash
# Regenerate requirements.lock from pyproject.toml's dependencies in a scratch environment.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3.11 -m venv "$scratch/venv"
deps=$(python3.11 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml","rb"))["project"]["dependencies"]))')
echo "$deps" | xargs "$scratch/venv/bin/pip" install --quiet
{
    echo "# Exact versions of every package (pip freeze of a tested environment). Built by scripts/env.sh;"
    echo "# regenerate with scripts/lock.sh after changing pyproject.toml dependencies."
    "$scratch/venv/bin/pip" freeze --all --exclude-editable | grep -v "^pip=="
} > requirements.lock
echo "requirements.lock updated"
