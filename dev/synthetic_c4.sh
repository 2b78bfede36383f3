#!/usr/bin/env bash
# Tokenized synthetic C4 at a chosen size, for throughput runs of the llama31_8b preset on machines
# without network (no real C4, no Llama tokenizer): the embedded dataset's generator, tokenizer and
# C4 tools (utils.corpus, utils.c4 consolidate, utils.tokenize), as the real data path runs them.
#
#   bash dev/synthetic_c4.sh DST [TRAIN_DOCS_PER_SHARD] [WORKERS]
#
# 16 train shards are grouped into en_0..en_7 and en_6 and en_7 are tokenized (so that either
# BENCHMARK_AREA finds its files): about 4 x TRAIN_DOCS_PER_SHARD x 240 tokens (default 8000: about 930 sequences of 8,192 tokens). The
# validation subset has the real one's name and size, the first 91,205 documents of 8 shards (about
# 22M tokens, enough for 1,024 sequences of 8,192; N_VALIDATION=N in the environment makes a smaller
# one, which the llama31_8b preset does not read). WORKERS defaults to the machine's cores.
# Prints the PREPROCESSED_PATH and TOKENIZER_PATH to use, with VOCAB_SIZE=128256 for the real
# model's embedding size (the tokenizer has 2,048 ids).
set -euo pipefail
# shellcheck source=dev/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
    llama31_usage "$0"
    [[ $# -ge 1 ]] && exit 0 || exit 2
fi
train_docs="${2:-8000}"
workers="${3:-$(nproc)}"
n_valid="${N_VALIDATION:-91205}"
for arg in "TRAIN_DOCS_PER_SHARD=${train_docs}" "WORKERS=${workers}" "N_VALIDATION=${n_valid}"; do
    [[ "${arg#*=}" =~ ^[1-9][0-9]*$ ]] || { echo "error: ${arg} must be a positive whole number" >&2; exit 2; }
done
mkdir -p "$1"
dst="$(cd "$1" && pwd)"  # absolute, before moving to the repository root
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"

"${py}" -m utils.smoke --dst "${dst}/smoke" >/dev/null
"${py}" -m utils.corpus --dst "${dst}/raw" --train-shards 16 --valid-shards 8 \
    --docs-per-shard "${train_docs}" --valid-docs-per-shard $(((n_valid + 7) / 8)) --workers "${workers}"
"${py}" -m utils.c4 consolidate --src "${dst}/raw" --dst "${dst}/merged" --n-validation "${n_valid}" \
    --workers "$((workers < 8 ? workers : 8))"
for name in c4-train.en_6 c4-train.en_7 "c4-validation-${n_valid}-samples.en"; do
    "${py}" -m utils.tokenize --input "${dst}/merged/${name}.json.gz" --output-prefix "${dst}/preprocessed/${name}" \
        --tokenizer "${dst}/smoke/tokenizer" --workers "${workers}" --no-progress
done
echo "PREPROCESSED_PATH=${dst}/preprocessed TOKENIZER_PATH=${dst}/smoke/tokenizer VOCAB_SIZE=128256"
