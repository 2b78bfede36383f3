#!/usr/bin/env bash
# Fetches the Llama 3.1 tokenizer files (tokenizer.json, tokenizer_config.json,
# special_tokens_map.json) of the gated meta-llama/Llama-3.1-8B repository; no weights.
# Accept the licence on the model's Hugging Face page first, then log in (`hf auth login`) or
# export HF_TOKEN; the token is never printed.
#
#   bash utils/download_hf_llama3.sh [TOKENIZER_PATH] [--repo REPO] [--revision REV]
#
# TOKENIZER_PATH defaults to the environment variable of that name. This is
# `python -m utils.tokenizer download --dst TOKENIZER_PATH`. The interpreter: PYTHON, else
# .venv/bin/python, else python3.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=dev/lib.sh
source "${repo_root}/dev/lib.sh"
dst="${TOKENIZER_PATH:-}"
if [[ $# -gt 0 && "$1" != -* ]]; then
    dst="$1"
    shift
fi
if [[ -z "${dst}" ]]; then
    echo "error: give the tokenizer folder as an argument or as TOKENIZER_PATH" >&2
    echo "usage: bash utils/download_hf_llama3.sh TOKENIZER_PATH [--repo REPO] [--revision REV]" >&2
    exit 2
fi
python="$(llama31_python "${repo_root}")"
llama31_export_pythonpath "${repo_root}"
exec "${python}" -m utils.tokenizer download --dst "${dst}" "$@"
