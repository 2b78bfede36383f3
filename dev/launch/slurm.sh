# shellcheck shell=bash disable=SC2034,SC2153,SC2154  # the launch's variables, shared by run_llama31.sh and its parts
# run_llama31.sh, MODE=slurm: one sbatch job per part (dev/slurm/llama31.sbatch), chained with
# --dependency=afterok; with IMAGE the tasks run in the image (dev/launch/image.sh).

cancel_submitted() {
    if ((${#submitted[@]})); then
        scancel "${submitted[@]}" 2>/dev/null || true
        echo "  the ${#submitted[@]} job(s) this launch had submitted were cancelled: ${submitted[*]}" >&2
    fi
}

launch_slurm() {
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
    ((in_image)) && image_srun_opts

    submitted=()
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
}
