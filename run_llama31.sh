#!/usr/bin/env bash
# Runs the llama31_8b benchmark and checks its MLPerf log.
#
#   bash run_llama31.sh                  the embedded default: builds a small C4-format dataset and
#                                        tokenizer offline, trains the smoke preset on CPU to its target
#   source config.sh && bash run_llama31.sh
#                                        the configured run (PRESET, data paths, GBS, ...)
#   bash run_llama31.sh --help           every knob of the training entry point
#
# Outside the NGC container a virtual environment .venv is created and reused (dev/venv.sh).
# Extra arguments are passed to `python -m benchmark.train`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=dev/venv.sh
source dev/venv.sh

# Quieten the notices Megatron-Core prints when TransformerEngine/Apex are absent (expected on CPU).
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning}"

exec "${PYTHON}" -m benchmark.train "$@"
