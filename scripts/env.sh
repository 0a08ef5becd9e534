#!/usr/bin/env bash
# Build the project's Python environment once, then reuse it; prints its path on stdout.
#
# The environment lives outside the clone, keyed by the hash of requirements.lock, so every
# clone on a machine shares it and a second run costs well under a second. A half-built
# environment (killed install) has no .complete marker and is rebuilt from scratch.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
key=$(sha256sum "$repo/requirements.lock" | cut -c1-16)
env_dir="${STAGEWISE_ENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/stagewise}/env-py311-$key"

if [ ! -f "$env_dir/.complete" ]; then
    mkdir -p "$(dirname "$env_dir")"
    exec 9>"$env_dir.lock"
    flock 9   # a parallel caller waits here instead of installing twice
    if [ ! -f "$env_dir/.complete" ]; then
        python=${PYTHON:-$(command -v python3.11 || command -v python3)}
        if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
            echo "stagewise needs Python 3.11; $python is $("$python" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
            exit 1
        fi
        echo "Building the Python environment in $env_dir (first run only, a few minutes)..." >&2
        rm -rf "$env_dir"
        "$python" -m venv "$env_dir"
        # The lock is a complete pip freeze, so dependency resolution is skipped.
        "$env_dir/bin/python" -m pip install --quiet --no-deps --no-input \
            -r "$repo/requirements.lock" 2> >(grep -v 'is ignored: it is neither' >&2)
        "$env_dir/bin/python" -m pip check >&2
        # Build matplotlib's font cache now, with the environment, not as a "building the
        # font cache" warning in the middle of the first pipeline run.
        "$env_dir/bin/python" -c 'import logging; logging.getLogger("matplotlib").setLevel(logging.ERROR); import matplotlib.font_manager'
        touch "$env_dir/.complete"
        echo "Python environment ready." >&2
    fi
fi
ln -sfn "$env_dir" "$repo/.venv"
echo "$env_dir"
