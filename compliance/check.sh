#!/usr/bin/env bash
# Check llama31_8b MLPerf logs with the official mlperf_logging tools: a shell front for
# `python -m compliance.check`, usable from any directory (paths stay relative to the caller).
# Usage: compliance/check.sh LOG_OR_FOLDER [--ruleset 6.0.0] [--profile closed|smoke] [--help]
# Without --profile, a launcher's JOB_DIR is checked with the profile it recorded (compliance_profile.txt).
# The interpreter is $PYTHON if set, else the repository's .venv if present, else python3.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=dev/lib.sh
source "${repo_root}/dev/lib.sh"
PYTHON="$(llama31_python "${repo_root}")"
llama31_export_pythonpath "${repo_root}"
exec "${PYTHON}" -m compliance.check "$@"
