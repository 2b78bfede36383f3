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
# The repository's place inside the image (the Dockerfile's WORKDIR), for pyxis --container-workdir.
readonly CONTAINER_REPO=/workspace/llama31

usage() {
    sed -n '2,/^set -euo pipefail$/{/^set /d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

log() { printf '[llama31] %s\n' "$*"; }
# dev/venv.sh, sourced from a function: a bare `source` here would pass it this script's own
# arguments (--help, --print-config, ...), which it would take for a requirements set.
use_venv() {
    # shellcheck source=dev/venv.sh
    source dev/venv.sh
}

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
    use_venv
    exec "${PYTHON}" -m benchmark.train --help
fi
if ((query && !dry_run)); then
    # A question about the configuration, not a run: no folders, no seeds, no jobs.
    use_venv
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
JOB_DIR="$(absolute "${JOB_DIR:-${repo_root}/results/$(date +%Y%m%d-%H%M%S)}")"
for name in PREPROCESSED_PATH TOKENIZER_PATH CHECKPOINT_DIR INDEX_CACHE_DIR MODEL_CKPT TENSORBOARD_DIR PROFILE_DIR; do
    if [[ -n "${!name:-}" ]]; then
        value="$(absolute "${!name}")"
        printf -v "${name}" '%s' "${value}"
        export "${name?}"
    fi
done
export JOB_DIR

# --- Validation: every problem of the chosen mode, reported together -------------------------
problems=()
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_flag() { [[ "$1" == 0 || "$1" == 1 ]]; }
# Seeds reach NumPy, whose seeds are below 2**32; the training entry also checks the seed plus its
# per-pipeline-stage offset. Leading zeros are dropped before the comparison (bash reads 08 as octal).
readonly SEED_MAX=4294967295
in_seed_range() {
    local digits="${1#"${1%%[!0]*}"}"
    ((${#digits} <= ${#SEED_MAX})) && ((10#${digits:-0} <= SEED_MAX))
}

case "${MODE}" in
    local | slurm) ;;
    *) problems+=("MODE=${MODE} must be local or slurm") ;;
esac
for name in GPUS_PER_NODE MAX_RETRIES SIGNAL_MINUTES; do
    is_uint "${!name}" || problems+=("${name}=${!name} must be a whole number (0 or more)")
done
for name in NNODES NEXP NPAR; do
    if ! is_uint "${!name}" || ((10#${!name} < 1)); then
        problems+=("${name}=${!name} must be a whole number, 1 or more")
    fi
done
for name in SAVE_CKPT USE_CKPT FROM_HF; do
    is_flag "${!name}" || problems+=("${name}=${!name} must be 0 or 1")
done

# Seeds: the given ones (SEEDS), else SEED for a single run, else generated; distinct in any case.
seeds=()
seed_source=generated
if [[ -n "${SEEDS}" ]]; then
    seed_source=given
    read -r -a seeds <<<"${SEEDS}"
    for s in "${seeds[@]}"; do
        if ! is_uint "${s}"; then
            problems+=("SEEDS has '${s}', which is not a whole number")
        elif ! in_seed_range "${s}"; then
            problems+=("SEEDS has ${s}, above ${SEED_MAX}: seeds are whole numbers from 0 to ${SEED_MAX} (NumPy's range)")
        fi
    done
    if [[ -n "$(printf '%s\n' "${seeds[@]}" | sort | uniq -d)" ]]; then
        problems+=("SEEDS='${SEEDS}' repeats a seed: each run needs its own")
    fi
    if is_uint "${NEXP}" && ((${#seeds[@]} < 10#${NEXP})); then
        problems+=("SEEDS has ${#seeds[@]} seed(s) for NEXP=${NEXP} runs: give one per run, or leave SEEDS empty to generate them")
    fi
elif [[ -n "${SEED:-}" && "${NEXP}" == 1 ]]; then
    seed_source=given
    seeds=("${SEED}")
    if ! is_uint "${SEED}"; then
        problems+=("SEED=${SEED} must be a whole number")
    elif ! in_seed_range "${SEED}"; then
        problems+=("SEED=${SEED} is above ${SEED_MAX}: seeds are whole numbers from 0 to ${SEED_MAX} (NumPy's range)")
    fi
fi

if [[ -n "${PRESET}" && "${PRESET}" != smoke ]]; then
    for name in PREPROCESSED_PATH TOKENIZER_PATH; do
        if [[ -z "${!name:-}" ]]; then
            problems+=("${name} is not set: PRESET=${PRESET} needs it (config.sh, Paths)")
        elif [[ ! -d "${!name}" ]]; then
            problems+=("${name}=${!name} is not a folder")
        fi
    done
fi
if [[ "${USE_CKPT}" == 1 || "${FROM_HF}" == 1 ]]; then
    if [[ -z "${MODEL_CKPT:-}" ]]; then
        problems+=("MODEL_CKPT is not set: USE_CKPT=1 or FROM_HF=1 starts from it")
    elif [[ ! -e "${MODEL_CKPT}" ]]; then
        problems+=("MODEL_CKPT=${MODEL_CKPT} does not exist")
    fi
fi
if [[ "${NPAR}" != 1 ]] && ! { is_uint "${JOB_SAMPLES:-}" && ((10#${JOB_SAMPLES} > 0)); }; then
    problems+=("NPAR=${NPAR} chains jobs that each train JOB_SAMPLES samples and checkpoint for the next: set JOB_SAMPLES (a multiple of EVAL_EVERY)")
fi
if [[ "${MODE}" == local && "${NNODES}" != 1 ]]; then
    problems+=("NNODES=${NNODES}: MODE=local runs on this machine only; use MODE=slurm for several nodes")
fi
if [[ "${MODE}" == slurm && -n "${IMAGE}" ]]; then
    # pyxis separates mounts with ',' and source from target with ':'.
    for name in PREPROCESSED_PATH TOKENIZER_PATH JOB_DIR CHECKPOINT_DIR INDEX_CACHE_DIR MODEL_CKPT TENSORBOARD_DIR PROFILE_DIR; do
        if [[ "${!name:-}" == *[,:]* ]]; then
            problems+=("${name}=${!name} contains ',' or ':', which a pyxis --container-mounts entry cannot hold")
        fi
    done
fi
if [[ "${MODE}" == slurm ]] && ((!dry_run)) && ! command -v sbatch >/dev/null; then
    problems+=("sbatch is not on PATH: MODE=slurm submits from a Slurm login node (or set MODE=local)")
fi
if ((${#problems[@]})); then
    echo "error: the configuration cannot run (nothing was started or submitted):" >&2
    printf '  - %s\n' "${problems[@]}" >&2
    exit 2
fi

# Generated seeds: 31-bit, distinct, drawn from the kernel's random source.
while ((${#seeds[@]} < 10#${NEXP})); do
    s="$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')"
    s=$((s % 2147483647 + 1))
    if [[ " ${seeds[*]} " != *" ${s} "* ]]; then
        seeds+=("${s}")
    fi
done
seeds=("${seeds[@]:0:10#${NEXP}}")
# The largest seed is the one the training entry's range check is run with (below).
max_seed="${seeds[0]}"
for s in "${seeds[@]}"; do
    if ((10#${s} > 10#${max_seed})); then max_seed="${s}"; fi
done

# --- What each job runs ----------------------------------------------------------------------
n_runs=$((10#${NEXP}))
n_parts=$((10#${NPAR}))
procs_per_node=$((10#${GPUS_PER_NODE} > 0 ? 10#${GPUS_PER_NODE} : 1))
world_size=$((procs_per_node * 10#${NNODES}))
in_image=0
[[ "${MODE}" == slurm && -n "${IMAGE}" ]] && in_image=1

# The interpreter: the image's python in a container, else this checkout's .venv (dev/venv.sh). A dry
# run names the .venv interpreter without creating it.
if ((in_image)); then
    job_python=python
elif ((dry_run)); then
    if [[ -n "${LLAMA31_CONTAINER:-}" ]]; then
        job_python="${PYTHON:-python}"
    else
        job_python="${LLAMA31_VENV:-${repo_root}/.venv}/bin/python"
    fi
else
    use_venv
    job_python="${PYTHON}"
fi

run_name() { printf 'run%02d_seed%s' "$(($1 + 1))" "${seeds[$1]}"; }
log_file() { # run dir, part (1-based)
    if ((n_parts == 1)); then printf '%s/mlperf.log' "$1"; else printf '%s/mlperf_part%d.log' "$1" "$2"; fi
}
ckpt_dir() { # run name
    if [[ -n "${CHECKPOINT_DIR:-}" ]]; then printf '%s/%s' "${CHECKPOINT_DIR}" "$1"; else printf '%s/%s/checkpoints' "${JOB_DIR}" "$1"; fi
}
# The one Python entry, as a job runs it: torchrun's processes for local GPUs, else one process.
use_torchrun=0
[[ "${MODE}" == local && "${GPUS_PER_NODE}" != 0 ]] && use_torchrun=1
train_cmd() { # log file
    if ((use_torchrun)); then
        printf '%s\0' "${job_python}" -m torch.distributed.run --standalone --nnodes=1 \
            "--nproc-per-node=${procs_per_node}" -m benchmark.train --log-file "$1" "${train_args[@]}"
    else
        printf '%s\0' "${job_python}" -m benchmark.train --log-file "$1" "${train_args[@]}"
    fi
}

# Knob names, in config.sh's order: the environment every job gets, shown by --dry-run.
mapfile -t knob_names < <(sed -n 's/^export \([A-Z][A-Z0-9_]*\)=.*/\1/p' config.sh)
quoted() { local out="" a; for a in "$@"; do out+="${out:+ }$(printf '%q' "${a}")"; done; printf '%s' "${out}"; }

# --- One launch at a time per JOB_DIR ---------------------------------------------------------
# A launch holds an exclusive flock on JOB_DIR/.launch.lock for its whole life (MODE=local: every run;
# MODE=slurm: the submission), and writes into the file who it is. The lock belongs to the open file,
# so it ends with the launch however the launch ends: a file left by a killed launch blocks nothing.
# Its training processes inherit the descriptor, so a training that outlives a killed launcher still
# keeps JOB_DIR taken. The file stays in place: removing it would let a third launch lock a new file
# while a second still holds the old one.
lock_file="${JOB_DIR}/.launch.lock"
readonly LOCK_BUSY=200 # flock's exit status for "held by another", distinct from its own errors
refuse_busy() {
    local pid="" host="" started="" mode="" field who stop fields=()
    read -r -a fields <"${lock_file}" 2>/dev/null || true
    for field in "${fields[@]}"; do
        case "${field}" in
            pid=*) pid="${field#pid=}" ;;
            host=*) host="${field#host=}" ;;
            started=*) started="${field#started=}" ;;
            mode=*) mode="${field#mode=}" ;;
        esac
    done
    if [[ -z "${pid}" ]]; then
        who="a launch that is starting"
        stop="wait for it"
    else
        who="the launch of pid ${pid} on host ${host}, MODE=${mode}, started ${started}"
        stop="wait for it to end or stop it (kill ${pid} on ${host})"
        if [[ "${host}" == "${HOSTNAME}" ]] && ! kill -0 "${pid}" 2>/dev/null; then
            who+=" (pid ${pid} has exited; a training it started still holds the lock)"
            stop="wait for that training to end or stop it (fuser -v ${lock_file} names it)"
        fi
    fi
    echo "error: JOB_DIR=${JOB_DIR} is in use by another launch: ${who}; two launches into one JOB_DIR would train into the same runs and logs. Choose another JOB_DIR, or ${stop} (nothing was started or submitted)" >&2
    exit 2
}
# Before the checks that read JOB_DIR: refused with the other launch's name, not a side effect of it.
refuse_if_busy() {
    local fd rc=0
    [[ -e "${lock_file}" ]] && command -v flock >/dev/null || return 0
    exec {fd}<>"${lock_file}" || return 0
    flock -n -E "${LOCK_BUSY}" "${fd}" || rc=$?
    exec {fd}>&-
    if ((rc == LOCK_BUSY)); then refuse_busy; fi
}
# Taken once the launch is about to write into JOB_DIR; held until this shell exits.
take_job_dir() {
    local rc=0
    mkdir -p "${JOB_DIR}"
    # The monitoring folders outside JOB_DIR exist before a container mounts them.
    for name in TENSORBOARD_DIR PROFILE_DIR; do
        if [[ -n "${!name:-}" ]]; then mkdir -p "${!name}"; fi
    done
    if ! command -v flock >/dev/null; then
        log "warning: flock is not on PATH (util-linux): ${JOB_DIR} is not guarded against a second launch"
        return 0
    fi
    # Read-write, not '>': opening must not truncate the record of a launch that holds the lock.
    exec {job_dir_lock_fd}<>"${lock_file}"
    flock -n -E "${LOCK_BUSY}" "${job_dir_lock_fd}" || rc=$?
    if ((rc == LOCK_BUSY)); then refuse_busy; fi
    if ((rc != 0)); then
        log "warning: cannot lock ${lock_file} (flock exit ${rc}; a file system without flock?): ${JOB_DIR} is not guarded against a second launch"
        return 0
    fi
    # Rewritten in place (the lock is on this file's inode, so no temporary file and rename).
    printf 'pid=%s host=%s started=%s mode=%s\n' "$$" "${HOSTNAME}" "$(date +%Y-%m-%dT%H:%M:%S%z)" "${MODE}" >"${lock_file}"
}
((dry_run)) || refuse_if_busy

# Existing logs are never overwritten: a run folder is new, or this launch stops here.
refuse_existing_logs() {
    local i k f
    for ((i = 0; i < n_runs; i++)); do
        for ((k = 1; k <= n_parts; k++)); do
            f="$(log_file "${JOB_DIR}/$(run_name "${i}")" "${k}")"
            if [[ -e "${f}" ]]; then
                echo "error: ${f} exists; choose a new JOB_DIR or other SEEDS (nothing was started or submitted)" >&2
                exit 2
            fi
        done
    done
}
refuse_existing_logs

# The training configuration, resolved with the first run's environment (and the given seed) and the
# jobs' world size by `python -m benchmark.config --print-config`, which exits 2 naming the knob: a bad
# value is reported here, before anything runs or is submitted. Checked with the largest seed, every
# run's seed is in range. MODE=local runs the jobs on this machine, so it is resolved for this machine
# (its GPU, its TransformerEngine). MODE=slurm runs them on the nodes, maybe inside IMAGE, so it is
# checked for a job with the nodes' device (--job-device) without asking this machine what it has:
# layout, ranges and knob combinations here, TransformerEngine and the GPU by each job on its node.
# With IMAGE the image's python is not here; the module needs only the standard library, so this
# machine's python3 checks it.
check_python="${job_python}"
check_for=()
job_device=any
((10#${GPUS_PER_NODE} > 0)) && job_device=cuda
[[ "${MODE}" == slurm && "${GPUS_PER_NODE}" == 0 ]] && job_device=cpu
if [[ "${MODE}" == slurm ]]; then
    check_for=(--job-device "${job_device}")
fi
if ((in_image)) || { [[ ! -x "${job_python}" ]] && ! command -v "${job_python}" >/dev/null; }; then
    # No interpreter of the jobs' here (IMAGE, or a dry run before .venv exists): the host's python3.
    check_for=(--job-device "${job_device}")
    check_python="$(command -v python3 || true)"
fi
resolved_config() { # seed
    SEED="$1" RESULT_DIR="${JOB_DIR}/$(run_name 0)" CHECKPOINT_DIR="$(ckpt_dir "$(run_name 0)")" \
        WORLD_SIZE="${world_size}" "${check_python}" -m benchmark.config --print-config "${check_for[@]}" \
        "${train_args[@]}"
}
config_invalid() {
    echo "error: the training configuration is invalid (above); nothing was started or submitted" >&2
    exit 2
}

if ((dry_run)); then
    echo "# dry run: MODE=${MODE}: NEXP=${NEXP} run(s) x NPAR=${NPAR} job(s), NNODES=${NNODES} x GPUS_PER_NODE=${GPUS_PER_NODE} (${world_size} process(es)), MAX_RETRIES=${MAX_RETRIES}, JOB_DIR=${JOB_DIR}"
    for ((i = 0; i < n_runs; i++)); do
        echo "# $(run_name "${i}"): seed ${seeds[$i]} (${seed_source})"
    done
    if [[ "${MODE}" == slurm ]] && ((n_parts > 1)); then
        echo "# JOB_ID_OF_<run>_part<k> stands for the job id that sbatch returns for that part"
    fi
    echo "# environment of every job (the config.sh knobs exported here):"
    for name in "${knob_names[@]}"; do
        if [[ -n "${!name:-}" && "$(declare -p "${name}")" == "declare -"*x* ]]; then
            echo "export ${name}=$(printf '%q' "${!name}")"
        fi
    done
    if [[ -z "${check_python}" ]]; then
        echo "# training configuration: not checked (no python3 on this machine); each job checks it when it starts"
    else
        if ((${#check_for[@]})); then
            case "${job_device}" in
                cuda) on="the nodes' GPUs" ;;
                cpu) on="CPU" ;;
                *) on="a device not known here" ;;
            esac
            where="checked here for jobs on ${on} ($(basename "${check_python}") -m benchmark.config --print-config ${check_for[*]}); each job resolves it again where it runs"
            ((in_image)) && where+=", inside IMAGE"
        else
            where="resolved on this machine by python -m benchmark.config --print-config"
        fi
        echo "# training configuration of $(run_name 0), ${where}:"
        resolved_config "${seeds[0]}" || config_invalid
        if [[ "${max_seed}" != "${seeds[0]}" ]]; then
            resolved_config "${max_seed}" >/dev/null || config_invalid
        fi
    fi
    echo "# what would run, one line per job:"
elif [[ -n "${check_python}" ]]; then
    resolved_config "${max_seed}" >/dev/null || config_invalid
else
    log "warning: no python3 on this machine: the training configuration is checked by each job when it starts"
fi

# The compliance profile the runs are checked with, recorded in JOB_DIR so that the suggested
# `compliance/check.sh JOB_DIR` applies it without --profile: the smoke preset's runs are checked
# with the smoke profile (as the training entry checks its own log), every other preset's with the
# official rules. The preset is found as the entry finds it: --preset, else PRESET, else smoke.
run_preset="${PRESET:-smoke}"
for ((a = 0; a < ${#train_args[@]}; a++)); do
    case "${train_args[a]}" in
        --preset=*) run_preset="${train_args[a]#--preset=}" ;;
        --preset) ((a + 1 < ${#train_args[@]})) && run_preset="${train_args[a + 1]}" ;;
    esac
done
compliance_profile=closed
[[ "${run_preset}" == smoke ]] && compliance_profile=smoke
record_profile() {
    local file="${JOB_DIR}/compliance_profile.txt"
    printf '%s\n' "${compliance_profile}" >"${file}.tmp.$$" && mv -f "${file}.tmp.$$" "${file}"
}
# One JOB_DIR, one profile: a later launch into it (other SEEDS) must not relabel the runs already there.
recorded="$(cat "${JOB_DIR}/compliance_profile.txt" 2>/dev/null || true)"
if [[ -n "${recorded}" && "${recorded}" != "${compliance_profile}" ]]; then
    echo "error: ${JOB_DIR} holds runs checked with the ${recorded} profile (compliance_profile.txt), but preset ${run_preset} is checked with ${compliance_profile}; choose a new JOB_DIR (nothing was started or submitted)" >&2
    exit 2
fi
if ((dry_run)); then
    echo "# compliance profile: ${compliance_profile} (preset ${run_preset}), to be recorded in ${JOB_DIR}/compliance_profile.txt"
fi

# From here on JOB_DIR is this launch's; the logs are checked again under the lock, since a launch
# that ended while this one was being checked may have written them.
if ((!dry_run)); then
    take_job_dir
    refuse_existing_logs
fi

# --- MODE=local --------------------------------------------------------------------------------
if [[ "${MODE}" == local ]]; then
    ((dry_run)) || record_profile
    failed=0
    summary=()
    for ((i = 0; i < n_runs; i++)); do
        run="$(run_name "${i}")"
        run_dir="${JOB_DIR}/${run}"
        if ((!dry_run)); then
            mkdir -p "${run_dir}"
            printf '%s %s %s\n' "${run}" "${seeds[$i]}" "${seed_source}" >>"${JOB_DIR}/seeds.txt"
            log "${run}: seed ${seeds[$i]} (${seed_source}), results in ${run_dir}"
        fi
        status=success
        for ((k = 1; k <= n_parts; k++)); do
            # A run that reached its target in an earlier part is done (as the Slurm batch script does).
            if ((!dry_run && k > 1)) && grep -sqE '"key": "run_stop".*"status": "success"' "$(log_file "${run_dir}" $((k - 1)))"; then
                log "${run} reached its target in part $((k - 1)); parts $((k))-${n_parts} have nothing left to do"
                break
            fi
            mapfile -d '' -t cmd < <(train_cmd "$(log_file "${run_dir}" "${k}")")
            env_vars=(SEED="${seeds[$i]}" RESULT_DIR="${run_dir}" CHECKPOINT_DIR="$(ckpt_dir "${run}")")
            if ((dry_run)); then
                echo "$(quoted env "${env_vars[@]}" "${cmd[@]}") 2>&1 | tee -a $(printf '%q' "${run_dir}/output_part${k}.txt")"
                continue
            fi
            rc=1
            for ((attempt = 0; attempt <= 10#${MAX_RETRIES}; attempt++)); do
                ((attempt == 0)) || log "${run} part ${k}: retry ${attempt} of ${MAX_RETRIES}"
                rc=0
                env "${env_vars[@]}" "${cmd[@]}" 2>&1 | tee -a "${run_dir}/output_part${k}.txt" || rc=$?
                ((rc == 0)) && break
                if ((rc == 75)); then # the entry's status after SIGTERM/SIGUSR1/EXIT_DURATION_MINS: state saved
                    log "${run} part ${k}: stopped early with its state saved in $(ckpt_dir "${run}"); a retry resumes from it"
                fi
                if ((rc == 130)); then # the entry's exit status after Ctrl-C: stop, retry nothing
                    log "interrupted: ${run} part ${k}; the runs after it were not started"
                    exit 130
                fi
            done
            if ((rc != 0)); then
                status="failed in part ${k} of ${n_parts} (exit ${rc})"
                failed=$((failed + 1))
                break
            fi
        done
        summary+=("${run}: ${status}")
    done
    ((dry_run)) && exit 0
    log "done: ${n_runs} run(s) in ${JOB_DIR}"
    printf '  %s\n' "${summary[@]}"
    log "check them all: compliance/check.sh ${JOB_DIR}"
    exit $((failed > 0))
fi

# --- MODE=slurm --------------------------------------------------------------------------------
sbatch_common=(--nodes="${NNODES}" --ntasks-per-node="${procs_per_node}" --open-mode=append --chdir="${repo_root}")
[[ -n "${ACCOUNT}" ]] && sbatch_common+=(--account="${ACCOUNT}")
[[ -n "${PARTITION}" ]] && sbatch_common+=(--partition="${PARTITION}")
[[ -n "${TIME}" ]] && sbatch_common+=(--time="${TIME}")
if ((10#${GPUS_PER_NODE} > 0)); then
    sbatch_common+=(--gpus-per-node="${GPUS_PER_NODE}" --exclusive)
fi
if ((10#${MAX_RETRIES} > 0)); then sbatch_common+=(--requeue); else sbatch_common+=(--no-requeue); fi
# SIGUSR1 to the batch shell (B:) SIGNAL_MINUTES before the limit; the batch script passes it on to
# the tasks, which save and exit 75, and requeues the job. Slurm may send it up to a minute early.
if ((10#${SIGNAL_MINUTES} > 0)); then sbatch_common+=(--signal="B:USR1@$((10#${SIGNAL_MINUTES} * 60))"); fi

# srun's options, passed to the batch script: one task per GPU; the image and its mounts with pyxis.
srun_opts=(--nodes="${NNODES}" --ntasks-per-node="${procs_per_node}")
if ((in_image)); then
    mounts=()
    for name in PREPROCESSED_PATH TOKENIZER_PATH JOB_DIR CHECKPOINT_DIR INDEX_CACHE_DIR MODEL_CKPT TENSORBOARD_DIR PROFILE_DIR; do
        if [[ -n "${!name:-}" ]]; then mounts+=("${!name}:${!name}"); fi
    done
    mount_list="$(IFS=,; printf '%s' "${mounts[*]}")"
    srun_opts+=(--container-image="${IMAGE}" --container-mounts="${mount_list}" --container-workdir="${CONTAINER_REPO}")
fi

submitted=()
cancel_submitted() {
    if ((${#submitted[@]})); then
        scancel "${submitted[@]}" 2>/dev/null || true
        echo "  the ${#submitted[@]} job(s) this launch had submitted were cancelled: ${submitted[*]}" >&2
    fi
}
err_file="$(mktemp)"
trap 'rm -f "${err_file}"' EXIT

# The jobs earlier launches into JOB_DIR submitted (jobs.txt) that Slurm still has queued or running:
# a second set of jobs would write into the same run folders beside them.
live_jobs=()
unknown_jobs=()
if ((!dry_run)) && [[ -s "${JOB_DIR}/jobs.txt" ]]; then
    if ! command -v squeue >/dev/null; then
        log "warning: squeue is not on PATH: cannot check that the jobs in ${JOB_DIR}/jobs.txt have ended"
    else
        while read -r _ _ job_id _; do
            [[ "${job_id}" =~ ^[0-9]+$ ]] || continue
            if ! answer="$(squeue -h -t all -j "${job_id}" -o '%i %T %j' 2>"${err_file}")"; then
                # A job Slurm has forgotten has ended; any other failure leaves its state unknown.
                grep -qi 'invalid job id' "${err_file}" || unknown_jobs+=("${job_id}")
                continue
            fi
            while read -r id state name; do
                # Only this project's jobs (named llama31_<run>_p<k>): job ids are reused in time.
                [[ "${id}" == "${job_id}" && "${name}" == llama31_* ]] || continue
                case "${state}" in
                    PENDING | RUNNING | SUSPENDED | COMPLETING | CONFIGURING | REQUEUED | REQUEUE_* | RESIZING | SIGNALING | STAGE_OUT | STOPPED)
                        live_jobs+=("${id} (${name}, ${state})") ;;
                esac
            done <<<"${answer}"
        done <"${JOB_DIR}/jobs.txt"
    fi
fi
if ((${#unknown_jobs[@]})); then
    log "warning: squeue could not say whether job(s) ${unknown_jobs[*]} of ${JOB_DIR}/jobs.txt have ended: $(tr '\n' ' ' <"${err_file}")"
fi
if ((${#live_jobs[@]})); then
    ids=("${live_jobs[@]%% *}")
    listed="$(printf '%s; ' "${live_jobs[@]}")"
    echo "error: JOB_DIR=${JOB_DIR} has jobs of an earlier launch still queued or running (${JOB_DIR}/jobs.txt): ${listed%; }; a second launch into it would write into the same runs. Choose another JOB_DIR, or wait for them to end (squeue -j $(IFS=,; printf '%s' "${ids[*]}")) or cancel them (scancel ${ids[*]}) (nothing was submitted)" >&2
    exit 2
fi
((dry_run)) || record_profile
for ((i = 0; i < n_runs; i++)); do
    run="$(run_name "${i}")"
    run_dir="${JOB_DIR}/${run}"
    if ((!dry_run)); then
        mkdir -p "${run_dir}"
        printf '%s %s %s\n' "${run}" "${seeds[$i]}" "${seed_source}" >>"${JOB_DIR}/seeds.txt"
    fi
    previous=""
    for ((k = 1; k <= n_parts; k++)); do
        log_path="$(log_file "${run_dir}" "${k}")"
        mapfile -d '' -t cmd < <(train_cmd "${log_path}")
        env_vars=(SEED="${seeds[$i]}" RESULT_DIR="${run_dir}" CHECKPOINT_DIR="$(ckpt_dir "${run}")" LLAMA31_MLPERF_LOG="${log_path}")
        sbatch_args=("${sbatch_common[@]}" --job-name="llama31_${run}_p${k}" --output="${run_dir}/slurm-%j.out" --parsable)
        if ((k > 1)); then
            sbatch_args+=(--dependency="afterok:${previous:-JOB_ID_OF_${run}_part$((k - 1))}" --kill-on-invalid-dep=yes)
        fi
        submit=(env "${env_vars[@]}" sbatch "${sbatch_args[@]}" dev/slurm/llama31.sbatch "${srun_opts[@]}" -- "${cmd[@]}")
        if ((dry_run)); then
            quoted "${submit[@]}"
            echo
            continue
        fi
        if ! out="$("${submit[@]}" 2>"${err_file}")" || [[ ! "${out%%;*}" =~ ^[0-9]+$ ]]; then
            echo "error: sbatch could not submit ${run} part ${k} of ${n_parts}: $(tr '\n' ' ' <"${err_file}")${out}" >&2
            echo "  check ACCOUNT='${ACCOUNT}', PARTITION='${PARTITION}', TIME='${TIME}', NNODES=${NNODES}, GPUS_PER_NODE=${GPUS_PER_NODE} against the cluster (sinfo, sacctmgr show assoc user=\$USER)" >&2
            cancel_submitted
            exit 1
        fi
        previous="${out%%;*}"
        submitted+=("${previous}")
        printf '%s %s %s\n' "${run}" "${k}" "${previous}" >>"${JOB_DIR}/jobs.txt"
        log "${run} (seed ${seeds[$i]}, ${seed_source}) part ${k}/${n_parts}: job ${previous}, log ${log_path}"
    done
done
((dry_run)) && exit 0
log "submitted ${#submitted[@]} job(s); results in ${JOB_DIR}"
log "watch: squeue -j $(IFS=,; printf '%s' "${submitted[*]}")    cancel: scancel ${submitted[*]}"
log "check them all when done: compliance/check.sh ${JOB_DIR}"
