#!/usr/bin/env bash
# Sets up the Python environment (dev/venv.sh) and runs the CPU test suite.
# Usage: bash dev/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=dev/venv.sh
source dev/venv.sh dev
exec "${PYTHON}" -m pytest "$@"
