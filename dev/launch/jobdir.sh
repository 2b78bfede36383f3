# shellcheck shell=bash disable=SC2034,SC2153,SC2154  # the launch's variables, shared by run_llama31.sh and its parts
# run_llama31.sh: JOB_DIR, one launch at a time, its logs never overwritten, its compliance profile.

# A launch holds an exclusive flock on JOB_DIR/.launch.lock for its whole life (MODE=local: every run;
# MODE=slurm: the submission), and writes into the file who it is. The lock belongs to the open file,
# so it ends with the launch however the launch ends: a file left by a killed launch blocks nothing.
# Its training processes inherit the descriptor, so a training that outlives a killed launcher still
# keeps JOB_DIR taken. The file stays in place: removing it would let a third launch lock a new file
# while a second still holds the old one.
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
    # The folders outside JOB_DIR that the run fills exist before a container mounts them.
    for name in SMOKE_DATA_DIR TENSORBOARD_DIR PROFILE_DIR; do
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

record_profile() {
    local file="${JOB_DIR}/compliance_profile.txt"
    printf '%s\n' "${compliance_profile}" >"${file}.tmp.$$" && mv -f "${file}.tmp.$$" "${file}"
}
# The compliance profile the runs are checked with, recorded in JOB_DIR so that the suggested
# `compliance/check.sh JOB_DIR` applies it without --profile: the smoke preset's runs are checked
# with the smoke profile (as the training entry checks its own log), every other preset's with the
# official rules. The preset is found as the entry finds it: --preset, else PRESET, else smoke.
choose_compliance_profile() {
    run_preset="${PRESET:-smoke}"
    for ((a = 0; a < ${#train_args[@]}; a++)); do
        case "${train_args[a]}" in
            --preset=*) run_preset="${train_args[a]#--preset=}" ;;
            --preset) ((a + 1 < ${#train_args[@]})) && run_preset="${train_args[a + 1]}" ;;
        esac
    done
    compliance_profile=closed
    [[ "${run_preset}" == smoke ]] && compliance_profile=smoke
    # One JOB_DIR, one profile: a later launch into it (other SEEDS) must not relabel the runs already there.
    recorded="$(cat "${JOB_DIR}/compliance_profile.txt" 2>/dev/null || true)"
    if [[ -n "${recorded}" && "${recorded}" != "${compliance_profile}" ]]; then
        echo "error: ${JOB_DIR} holds runs checked with the ${recorded} profile (compliance_profile.txt), but preset ${run_preset} is checked with ${compliance_profile}; choose a new JOB_DIR (nothing was started or submitted)" >&2
        exit 2
    fi
    if ((dry_run)); then
        echo "# compliance profile: ${compliance_profile} (preset ${run_preset}), to be recorded in ${JOB_DIR}/compliance_profile.txt"
    fi
}
