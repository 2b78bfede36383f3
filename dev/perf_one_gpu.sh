#!/usr/bin/env bash
# The one-GPU throughput comparison of docs/PERFORMANCE.md in one go, on the GPU this runs on: the
# peer (transformers' Llama, compiled), then the benchmark's training step as shipped (the layer
# spec DEVICE=auto picks: TransformerEngine's where it imports) and, with TE, in FP8; the 8B shape
# cut to LAYERS layers (default 8), sequence 8192, MBS 1, each a JSON line in OUT_DIR/perf.jsonl;
# then the table of them (python -m benchmark.perf_table), ratios against the peer of this call.
#
#   bash dev/perf_one_gpu.sh OUT_DIR ["EXTRA benchmark.perf FLAGS" ...]
#
# Each further argument is one more variant, its benchmark.perf flags in one word, for example
#   bash dev/perf_one_gpu.sh /tmp/perf "--fp8 --fp8-recipe delayed --fp8-amax-history 1024 --fp8-amax-algo max"
# The Python is PYTHON, else .venv, else python3.
set -euo pipefail
# shellcheck source=dev/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
    llama31_usage "$0"
    [[ $# -ge 1 ]] && exit 0
    exit 2
fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$1"
shift
layers="${LAYERS:-8}"
python="$(llama31_python "${repo}")"
llama31_export_pythonpath "${repo}"
cd "${repo}"
if ! "${python}" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "error: ${python} sees no CUDA GPU: this comparison times one GPU (set PYTHON to an interpreter whose torch has CUDA, or run it on a GPU machine)" >&2
    exit 2
fi
mkdir -p "${out}"
lines="${out}/perf.jsonl"
: >"${lines}"
# One variant: its command's whole output goes to OUT_DIR/NAME.txt, its JSON line to perf.jsonl.
measure() { # name, command...
    local name="$1"
    shift
    echo "[perf] ${name}: $*" >&2
    if "$@" >"${out}/${name}.txt" 2>&1; then
        grep '^{' "${out}/${name}.txt" >>"${lines}" || true
    else
        echo "[perf] ${name} failed (status $?): see ${out}/${name}.txt" >&2
    fi
}
common=(--layers "${layers}" --seq 8192 --mbs 1)
measure peer "${python}" -m benchmark.peers.hf_llama "${common[@]}" --compile --label "peer, compiled"
measure shipped "${python}" -m benchmark.perf "${common[@]}" --label "benchmark as shipped (bf16)"
if "${python}" -c "import transformer_engine.pytorch" 2>/dev/null; then
    measure fp8 "${python}" -m benchmark.perf "${common[@]}" --fp8 --label "benchmark --fp8"
fi
n=0
for flags in "$@"; do
    n=$((n + 1))
    read -r -a extra <<<"${flags}"
    measure "variant${n}" "${python}" -m benchmark.perf "${common[@]}" "${extra[@]}" --label "${flags}"
done
"${python}" -m benchmark.perf_table "${lines}"
