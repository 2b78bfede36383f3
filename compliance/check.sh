#!/usr/bin/env bash
# Check llama31_8b MLPerf logs with the official mlperf_logging tools: a shell front for
# `python -m compliance.check`, usable from any directory (paths stay relative to the caller).
# Usage: compliance/check.sh LOG_OR_FOLDER [--ruleset 6.0.0] [--profile closed|smoke] [--help]
# Without --profile, a launcher's JOB_DIR is checked with the profile it recorded (compliance_profile.txt).
# The interpreter is $PYTHON if set, else the repository's .venv if present, else python3.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "${repo_root}/.venv/bin/python" ]]; then
    PYTHON="${repo_root}/.venv/bin/python"
  else
    PYTHON=python3
  fi
fi
# The project runs from the repository root without being installed; make its packages importable
# without changing the caller's directory.
export PYTHONPATH="${repo_root}${PYTHONPATH:+:${PYTHONPATH}}"
exec "${PYTHON}" -m compliance.check "$@"
