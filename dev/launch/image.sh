# shellcheck shell=bash disable=SC2034,SC2153,SC2154  # the launch's variables, shared by run_llama31.sh and its parts
# run_llama31.sh, MODE=slurm with IMAGE: the tasks run in that image through pyxis, every path knob
# mounted at its own path, the repository at the image's WORKDIR.

# The path knobs a --container-mounts entry cannot hold, added to the launch's problems.
image_problems() {
    # pyxis separates mounts with ',' and source from target with ':'.
    for name in "${LLAMA31_PATH_KNOBS[@]}"; do
        if ! llama31_mountable "${!name:-}"; then
            problems+=("${name}=${!name} contains ',' or ':', which a pyxis --container-mounts entry cannot hold")
        fi
    done
}

# srun's pyxis options (added to srun_opts): the image, its mounts, its working folder.
image_srun_opts() {
    mounts=()
    for name in "${LLAMA31_PATH_KNOBS[@]}"; do
        if [[ -n "${!name:-}" ]]; then mounts+=("${!name}:${!name}"); fi
    done
    mount_list="$(IFS=,; printf '%s' "${mounts[*]}")"
    srun_opts+=(--container-image="${IMAGE}" --container-mounts="${mount_list}" --container-workdir="${LLAMA31_CONTAINER_REPO}")
}
