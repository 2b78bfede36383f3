#!/usr/bin/env bash
# Sets up the Python environment (dev/venv.sh), checks the Python sources with ruff (lint, and the
# formatting `ruff format` gives them), and runs the CPU test suite.
# Usage: bash dev/test.sh [pytest args...]   (ruff checks the whole tree whatever the arguments: < 1 s)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=dev/venv.sh
source dev/venv.sh dev
"${PYTHON}" -m ruff check --quiet .
"${PYTHON}" -m ruff format --check --quiet . || {
    echo "error: the files above are not formatted as ruff formats them: run ${PYTHON} -m ruff format ." >&2
    exit 1
}
exec "${PYTHON}" -m pytest "$@"
