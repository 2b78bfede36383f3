# shellcheck shell=bash disable=SC2034,SC2153,SC2154  # the launch's variables, shared by run_llama31.sh and its parts
# run_llama31.sh: the checks made before anything runs or is submitted.

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_flag() { [[ "$1" == 0 || "$1" == 1 ]]; }
# Seeds reach NumPy, whose seeds are below 2**32; the training entry also checks the seed plus its
# per-pipeline-stage offset. Leading zeros are dropped before the comparison (bash reads 08 as octal).
readonly SEED_MAX=4294967295
in_seed_range() {
    local digits="${1#"${1%%[!0]*}"}"
    ((${#digits} <= ${#SEED_MAX})) && ((10#${digits:-0} <= SEED_MAX))
}

# Every problem of the chosen mode, reported together (exit 2).
check_knobs() {
    problems=()
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
        image_problems
    fi
    if [[ "${MODE}" == slurm ]] && ((!dry_run)) && ! command -v sbatch >/dev/null; then
        problems+=("sbatch is not on PATH: MODE=slurm submits from a Slurm login node (or set MODE=local)")
    fi
    llama31_exit_on_problems "the configuration cannot run (nothing was started or submitted)" "${problems[@]}"
}

# Generated seeds: 31-bit, distinct, drawn from the kernel's random source.
draw_seeds() {
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
}

# The training configuration, resolved with the first run's environment (and the given seed) and the
# jobs' world size by `python -m benchmark.config --print-config`, which exits 2 naming the knob: a bad
# value is reported here, before anything runs or is submitted. Checked with the largest seed, every
# run's seed is in range. MODE=local runs the jobs on this machine, so it is resolved for this machine
# (its GPU, its TransformerEngine). MODE=slurm runs them on the nodes, maybe inside IMAGE, so it is
# checked for a job with the nodes' device (--job-device) without asking this machine what it has:
# layout, ranges and knob combinations here, TransformerEngine and the GPU by each job on its node.
# With IMAGE the image's python is not here; the module needs only the standard library, so this
# machine's python3 checks it.
resolved_config() { # seed
    SEED="$1" RESULT_DIR="${JOB_DIR}/$(run_name 0)" CHECKPOINT_DIR="$(ckpt_dir "$(run_name 0)")" \
        WORLD_SIZE="${world_size}" "${check_python}" -m benchmark.config --print-config "${check_for[@]}" \
        "${train_args[@]}"
}
config_invalid() {
    echo "error: the training configuration is invalid (above); nothing was started or submitted" >&2
    exit 2
}
# The check itself; at --dry-run also the plan's header: runs, seeds, the jobs' environment and the
# resolved configuration.
check_training_config() {
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
}
