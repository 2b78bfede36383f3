# shellcheck shell=bash disable=SC2034,SC2153,SC2154  # the launch's variables, shared by run_llama31.sh and its parts
# run_llama31.sh, MODE=local: the runs one after another on this machine, each part retried up to
# MAX_RETRIES times; a failed part ends its run.

launch_local() {
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
}
