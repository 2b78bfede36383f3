#!/usr/bin/env bash
# Tokenizes consolidated C4 files into Megatron .bin/.idx files: a Slurm array job, one task per
# file (task 0-7: c4-train.en_<task>.json.gz, task 8: the validation subset), each running
# `python -m utils.tokenize` (no BOS, no EOD: the reference's ids; see docs/DATA.md). By default
# only what the benchmark reads: c4-train.en_6 and the validation subset (tasks 6 and 8).
#
#   source config.sh; export MERGED_C4_PATH=/data/c4-merged
#   sbatch preprocess.sh               submit from the repository root (tasks 6 and 8)
#   sbatch --array=6-8 preprocess.sh   also en_7 (BENCHMARK_AREA=en6+en7); --array=0-8: every file
#   bash preprocess.sh                 no Slurm: the files BENCHMARK_AREA reads, one after another
#   TASKS="0 1 2" bash preprocess.sh   these files here (0-7: c4-train.en_N, 8: validation)
#   TASK=8 bash preprocess.sh          one file here
#   bash preprocess.sh --dry-run       print the commands, run nothing
#
# Environment (config.sh exports BENCHMARK_AREA and the last four):
#   MERGED_C4_PATH     folder from `python -m utils.c4 consolidate` (input)
#   N_VALIDATION       validation documents in the subset's name (default 91205)
#   BENCHMARK_AREA     without Slurm and TASK/TASKS: en6 (tasks 6, 8; default) | en6+en7 (6, 7, 8)
#   TASKS              without Slurm: the tasks to run, space-separated (overrides BENCHMARK_AREA)
#   WORKERS            tokenizing processes per task (default: SLURM_CPUS_PER_TASK, else all cores)
#   PYTHON             interpreter outside a container (default: .venv/bin/python, else python3)
#   PREPROCESSED_PATH  output folder for the .bin/.idx files
#   TOKENIZER_PATH     Llama 3.1 tokenizer folder (python -m utils.tokenizer download --dst ...)
#   IMAGE              pyxis image: each task runs in it through srun --container-image, with the
#                      three folders mounted at the same paths; empty = this checkout's environment
#   ACCOUNT, PARTITION sbatch options: pass them on the command line (sbatch -A ... -p ...)
# A task whose outputs are already complete and match its input is skipped (utils.tokenize's
# manifest), so resubmitting the array redoes only what did not finish.
#SBATCH --job-name=llama31-preprocess
#SBATCH --array=6,8
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=32
#SBATCH --time=12:00:00
#SBATCH --output=preprocess-%A_%a.out
set -euo pipefail

# The repository: this script's folder, or under sbatch (which runs a copy) the submission folder.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -f "${here}/utils/tokenize.py" ]]; then
    repo_root="${here}"
else
    repo_root="${SLURM_SUBMIT_DIR:-${PWD}}"
fi
dry_run=0
for arg in "$@"; do
    case "${arg}" in
        --dry-run) dry_run=1 ;;
        -h | --help)
            sed -n '2,/^set -euo pipefail$/{/^set /d;/^#SBATCH/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *)
            echo "error: unknown argument '${arg}' (see --help)" >&2
            exit 2
            ;;
    esac
done

problems=()
[[ -f "${repo_root}/utils/tokenize.py" ]] ||
    problems+=("${repo_root} is not the repository root: submit from it (cd llama31 && sbatch preprocess.sh)")
for name in MERGED_C4_PATH PREPROCESSED_PATH TOKENIZER_PATH; do
    if [[ -z "${!name:-}" ]]; then
        problems+=("${name} is not set")
    elif [[ "${name}" != PREPROCESSED_PATH && ! -d "${!name}" ]]; then
        problems+=("${name}=${!name} is not a folder")
    fi
done
n_validation="${N_VALIDATION:-91205}"
[[ "${n_validation}" =~ ^[1-9][0-9]*$ ]] || problems+=("N_VALIDATION=${n_validation} is not a positive integer")
task="${SLURM_ARRAY_TASK_ID:-${TASK:-}}"
if [[ -n "${task}" && ! "${task}" =~ ^[0-8]$ ]]; then
    problems+=("task ${task} is out of range: 0-7 are c4-train.en_0..7, 8 is the validation subset")
fi
# The tasks of a run outside a Slurm array: TASKS, else the files BENCHMARK_AREA trains on.
area="${BENCHMARK_AREA:-en6}"
case "${area}" in
    en6) area_tasks="6 8" ;;
    en6+en7) area_tasks="6 7 8" ;;
    *)
        area_tasks=""
        problems+=("BENCHMARK_AREA=${area} is unknown: choose en6 or en6+en7")
        ;;
esac
read -r -a tasks <<<"${TASKS:-${area_tasks}}"
for t in "${tasks[@]}"; do
    [[ "${t}" =~ ^[0-8]$ ]] ||
        problems+=("TASKS has '${t}', which is not a task: 0-7 are c4-train.en_0..7, 8 is the validation subset")
done
image="${IMAGE:-}"
if [[ -n "${image}" ]]; then
    [[ -n "${SLURM_JOB_ID:-}" ]] || problems+=("IMAGE is set, but pyxis containers need a Slurm job: sbatch preprocess.sh (or unset IMAGE)")
    for name in MERGED_C4_PATH PREPROCESSED_PATH TOKENIZER_PATH; do
        # pyxis separates mounts with ',' and source from target with ':'.
        [[ "${!name:-}" != *[,:]* ]] || problems+=("${name}=${!name} contains ',' or ':', which a pyxis mount cannot hold")
    done
fi
if ((${#problems[@]})); then
    echo "error: preprocess.sh cannot run (nothing was started):" >&2
    printf '  - %s\n' "${problems[@]}" >&2
    exit 2
fi
# Only now, with the repository found: under sbatch this script is a copy outside it, so the checks
# above (and --help) do without the shared helpers.
# shellcheck source=dev/lib.sh
source "${repo_root}/dev/lib.sh"

# Absolute paths: the container mounts them at the same place, and the working folder may differ.
merged="$(cd "${MERGED_C4_PATH}" && pwd)"
tokenizer="$(cd "${TOKENIZER_PATH}" && pwd)"
case "${PREPROCESSED_PATH}" in
    /*) preprocessed="${PREPROCESSED_PATH}" ;;
    *) preprocessed="${PWD}/${PREPROCESSED_PATH}" ;;
esac
((dry_run)) || mkdir -p "${preprocessed}"
workers="${WORKERS:-${SLURM_CPUS_PER_TASK:-$(nproc)}}"

if [[ -n "${image}" ]]; then
    runner=(srun --ntasks=1 --container-image="${image}"
        --container-mounts="${merged}:${merged},${preprocessed}:${preprocessed},${tokenizer}:${tokenizer}"
        --container-workdir="${LLAMA31_CONTAINER_REPO}" python)
else
    runner=("$(llama31_python "${repo_root}")")
    llama31_export_pythonpath "${repo_root}"
fi

run_task() { # task index
    local name
    if (($1 < 8)); then name="c4-train.en_$1"; else name="c4-validation-${n_validation}-samples.en"; fi
    local cmd=("${runner[@]}" -m utils.tokenize --input "${merged}/${name}.json.gz"
        --output-prefix "${preprocessed}/${name}" --tokenizer "${tokenizer}" --workers "${workers}")
    if ((dry_run)); then
        printf '%q ' "${cmd[@]}"
        echo
        return 0
    fi
    if [[ ! -f "${merged}/${name}.json.gz" ]]; then
        echo "error: ${merged}/${name}.json.gz not found: run python -m utils.c4 consolidate first (N_VALIDATION=${n_validation})" >&2
        return 2
    fi
    echo "[preprocess] task $1: ${name}"
    "${cmd[@]}"
}

if [[ -n "${task}" ]]; then
    run_task "${task}"
else
    for t in "${tasks[@]}"; do
        run_task "${t}"
    done
fi
