#!/usr/bin/env bash
# Gzips every .json file of a folder into .json.gz, several at a time, each written under a
# temporary name and renamed when complete; a .json is deleted once its .json.gz is complete.
# Run it again to resume an interrupted run.
#
#   bash utils/parallel_compress_json_to_gz.sh [DIR] [--workers N] [--keep]
#
# DIR defaults to C4_PATH. This is `python -m utils.c4 compress DIR`. The interpreter: PYTHON,
# else .venv/bin/python, else python3.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=dev/lib.sh
source "${repo_root}/dev/lib.sh"
dir="${C4_PATH:-}"
if [[ $# -gt 0 && "$1" != -* ]]; then
    dir="$1"
    shift
fi
if [[ -z "${dir}" ]]; then
    echo "error: give the folder as an argument or as C4_PATH" >&2
    echo "usage: bash utils/parallel_compress_json_to_gz.sh DIR [--workers N] [--keep]" >&2
    exit 2
fi
python="$(llama31_python "${repo_root}")"
llama31_export_pythonpath "${repo_root}"
exec "${python}" -m utils.c4 compress "${dir}" "$@"
