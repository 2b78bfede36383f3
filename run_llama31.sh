#!/usr/bin/env bash
# Runs the llama31_8b benchmark: NEXP runs with distinct seeds, each of NPAR consecutive jobs, here
# (MODE=local) or through Slurm (MODE=slurm), all through one Python entry, `python -m benchmark.train`.
#
#   bash run_llama31.sh                  the embedded default: builds a small C4-format dataset and
#                                        tokenizer offline, trains the smoke preset here to its target
#   source config.sh && bash run_llama31.sh
#                                        the configured runs (config.sh: Slurm, 8B preset, paths, ...)
#   bash run_llama31.sh --dry-run        print what would run or be submitted, then stop
#   bash run_llama31.sh --help           this text, then every knob of the training entry point
#
# Other arguments are passed to `python -m benchmark.train` of every run; `--print-config` alone
# just prints the resolved training configuration. Without config.sh: MODE=local, GPUS_PER_NODE=0
# (one process, CPU or one GPU), NEXP=1, NPAR=1, JOB_DIR=results/<date-time>; config.sh lists every knob.
#
# With NPAR > 1 each job of a run trains JOB_SAMPLES samples, checkpoints and ends; the next one
# resumes from the newest checkpoint in the run's checkpoint folder.
# Each run writes JOB_DIR/run<NN>_seed<SEED>/: its MLPerf log (mlperf.log, or mlperf_part<k>.log for
# NPAR > 1), the output of each job, and (CHECKPOINT_DIR empty) its checkpoints/. JOB_DIR/seeds.txt
# records every run's seed and whether it was given (SEEDS) or generated; JOB_DIR/jobs.txt the Slurm
# job ids; JOB_DIR/compliance_profile.txt the compliance profile of the runs (smoke for the smoke
# preset, else closed). `compliance/check.sh JOB_DIR` checks all runs once they are done, with that
# profile, a run split over NPAR jobs as one run. One launch at a time per JOB_DIR: a launch holds
# JOB_DIR/.launch.lock (a flock; the file names its pid, host and start) while it runs or submits, and
# a second one meanwhile exits 2 naming it; MODE=slurm also refuses a JOB_DIR whose jobs.txt jobs are
# still queued or running.
#
# Before anything runs or is submitted, the knobs are checked here and then by the training
# configuration's own check (python -m benchmark.config --print-config, with the largest seed; for
# MODE=slurm as the jobs' nodes will see it, with IMAGE by this machine's python3): a bad value ends
# the launch with exit status 2, at --dry-run as at a real launch.
# MODE=local runs the runs one after another: `python` when GPUS_PER_NODE is 0, else `torchrun` with
# GPUS_PER_NODE processes; a failed job is retried up to MAX_RETRIES times, and a failed part ends its run.
# MODE=slurm submits one sbatch job per part (dev/slurm/llama31.sbatch), chained with
# --dependency=afterok, each srun'ing one task per GPU (GPUS_PER_NODE=0: one CPU task per node, the
# NNODES tasks data-parallel replicas over gloo); with IMAGE set the tasks run in that image
# through pyxis, otherwise in this checkout's environment (.venv, on a file system the nodes share).
# A failed job requeues itself up to MAX_RETRIES times. SIGTERM or SIGUSR1 (asked for SIGNAL_MINUTES
# before TIME) or EXIT_DURATION_MINS make a job save a checkpoint, close its log and exit 75; the
# batch script requeues it (within MAX_RETRIES) and the new attempt resumes there. Outside the container, .venv is created and
# reused (dev/venv.sh).
set -euo pipefail

caller_dir="$PWD"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "${repo_root}"
# The launch's parts: dev/lib.sh is shared with the other scripts, dev/launch/ holds this script's
# checks, the JOB_DIR guard, and one file per mode.
# shellcheck source=dev/lib.sh
source dev/lib.sh
# shellcheck source=dev/launch/checks.sh
source dev/launch/checks.sh
# shellcheck source=dev/launch/jobs.sh
source dev/launch/jobs.sh
# shellcheck source=dev/launch/jobdir.sh
source dev/launch/jobdir.sh
# shellcheck source=dev/launch/image.sh
source dev/launch/image.sh
# shellcheck source=dev/launch/local.sh
source dev/launch/local.sh
# shellcheck source=dev/launch/slurm.sh
source dev/launch/slurm.sh

usage() {
    llama31_usage "${BASH_SOURCE[0]}"
}

log() { printf '[llama31] %s\n' "$*"; }

# --- Arguments -------------------------------------------------------------------------------
dry_run=0
want_help=0
query=0
train_args=()
for arg in "$@"; do
    case "${arg}" in
        --dry-run) dry_run=1 ;;
        -h | --help) want_help=1 ;;
        --print-config) query=1; train_args+=("${arg}") ;;
        *) train_args+=("${arg}") ;;
    esac
done

# Quieten the notices Megatron-Core prints when TransformerEngine/Apex are absent (expected on CPU).
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning}"

if ((want_help)); then
    usage
    echo
    llama31_use_venv
    exec "${PYTHON}" -m benchmark.train --help
fi
if ((query && !dry_run)); then
    # A question about the configuration, not a run: no folders, no seeds, no jobs.
    llama31_use_venv
    exec "${PYTHON}" -m benchmark.train "${train_args[@]}"
fi

# --- Knobs: the unconfigured defaults (config.sh sets its own for a cluster) ------------------
MODE="${MODE:-local}"
GPUS_PER_NODE="${GPUS_PER_NODE:-0}"
NNODES="${NNODES:-1}"
NEXP="${NEXP:-1}"
NPAR="${NPAR:-1}"
MAX_RETRIES="${MAX_RETRIES:-0}"
SIGNAL_MINUTES="${SIGNAL_MINUTES:-0}"
SAVE_CKPT="${SAVE_CKPT:-0}"
USE_CKPT="${USE_CKPT:-0}"
FROM_HF="${FROM_HF:-0}"
SEEDS="${SEEDS:-}"
TIME="${TIME:-}"
ACCOUNT="${ACCOUNT:-}"
PARTITION="${PARTITION:-}"
IMAGE="${IMAGE:-}"
PRESET="${PRESET:-}"

# Paths are made absolute against the caller's folder: jobs run elsewhere.
absolute() {
    local path="$1"
    if [[ -z "${path}" || "${path}" == /* ]]; then
        printf '%s' "${path}"
    else
        printf '%s/%s' "${caller_dir}" "${path#./}"
    fi
}
# JOB_DIR empty: a new folder for each launch, results/<date-time> (-2, -3, ... when an earlier launch
# in the same second took that name), so launches from one shell never share a folder.
if [[ -z "${JOB_DIR:-}" ]]; then
    JOB_DIR="${repo_root}/results/$(date +%Y%m%d-%H%M%S)"
    job_dir_base="${JOB_DIR}"
    for ((k = 2; ; k++)); do
        [[ -e "${JOB_DIR}" ]] || break
        JOB_DIR="${job_dir_base}-${k}"
    done
fi
JOB_DIR="$(absolute "${JOB_DIR}")"
for name in "${LLAMA31_PATH_KNOBS[@]}"; do
    if [[ -n "${!name:-}" ]]; then
        value="$(absolute "${!name}")"
        printf -v "${name}" '%s' "${value}"
        export "${name?}"
    fi
done

check_knobs
draw_seeds
plan_jobs

# One launch at a time per JOB_DIR (dev/launch/jobdir.sh).
lock_file="${JOB_DIR}/.launch.lock"
((dry_run)) || refuse_if_busy
refuse_existing_logs
check_training_config
choose_compliance_profile

# From here on JOB_DIR is this launch's; the logs are checked again under the lock, since a launch
# that ended while this one was being checked may have written them.
if ((!dry_run)); then
    take_job_dir
    refuse_existing_logs
fi

case "${MODE}" in
    local) launch_local ;;
    slurm) launch_slurm ;;
esac
