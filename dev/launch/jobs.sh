# shellcheck shell=bash disable=SC2034,SC2153,SC2154  # the launch's variables, shared by run_llama31.sh and its parts
# run_llama31.sh: what each job of a launch runs, in either mode.

# The runs' and jobs' shape, the jobs' interpreter and the knob names they get.
plan_jobs() {
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
        llama31_use_venv
        job_python="${PYTHON}"
    fi

    use_torchrun=0
    [[ "${MODE}" == local && "${GPUS_PER_NODE}" != 0 ]] && use_torchrun=1

    # Knob names, in config.sh's order: the environment every job gets, shown by --dry-run.
    mapfile -t knob_names < <(llama31_knob_names "${repo_root}")
}

run_name() { printf 'run%02d_seed%s' "$(($1 + 1))" "${seeds[$1]}"; }
log_file() { # run dir, part (1-based)
    if ((n_parts == 1)); then printf '%s/mlperf.log' "$1"; else printf '%s/mlperf_part%d.log' "$1" "$2"; fi
}
ckpt_dir() { # run name
    if [[ -n "${CHECKPOINT_DIR:-}" ]]; then printf '%s/%s' "${CHECKPOINT_DIR}" "$1"; else printf '%s/%s/checkpoints' "${JOB_DIR}" "$1"; fi
}
# The one Python entry, as a job runs it: torchrun's processes for local GPUs, else one process.
train_cmd() { # log file
    if ((use_torchrun)); then
        printf '%s\0' "${job_python}" -m torch.distributed.run --standalone --nnodes=1 \
            "--nproc-per-node=${procs_per_node}" -m benchmark.train --log-file "$1" "${train_args[@]}"
    else
        printf '%s\0' "${job_python}" -m benchmark.train --log-file "$1" "${train_args[@]}"
    fi
}

quoted() { local out="" a; for a in "$@"; do out+="${out:+ }$(printf '%q' "${a}")"; done; printf '%s' "${out}"; }
