#!/usr/bin/env bash
# Consolidates downloaded C4 shards: the 1024 train shards into c4-train.en_{0..7}.json.gz (128
# each, in index order) and the first 91,205 validation documents into
# c4-validation-91205-samples.en.json.gz, with a manifest.json.
#
#   bash utils/consolidate_data.sh [C4_PATH [MERGED_C4_PATH]] [more options of the Python command]
#
# The folders default to the environment variables of the same names. This is
# `python -m utils.c4 consolidate --src C4_PATH --dst MERGED_C4_PATH`; its --help lists the options
# (--n-validation, --workers). The interpreter: PYTHON, else .venv/bin/python, else python3.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=dev/lib.sh
source "${repo_root}/dev/lib.sh"
src="${C4_PATH:-}"
dst="${MERGED_C4_PATH:-}"
if [[ $# -gt 0 && "$1" != -* ]]; then
    src="$1"
    shift
    if [[ $# -gt 0 && "$1" != -* ]]; then
        dst="$1"
        shift
    fi
fi
if [[ -z "${src}" || -z "${dst}" ]]; then
    echo "error: give C4_PATH and MERGED_C4_PATH as arguments or environment variables" >&2
    echo "usage: bash utils/consolidate_data.sh C4_PATH MERGED_C4_PATH [options]" >&2
    exit 2
fi
python="$(llama31_python "${repo_root}")"
llama31_export_pythonpath "${repo_root}"
exec "${python}" -m utils.c4 consolidate --src "${src}" --dst "${dst}" "$@"
