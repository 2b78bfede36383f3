#!/usr/bin/env bash
# Runs the benchmark's image (Dockerfile) on this workstation with its GPUs.
#
#   docker build -t llama31-8b .
#   bash dev/run_docker.sh                          an interactive shell at the repository root
#   bash dev/run_docker.sh bash run_llama31.sh      the embedded default, inside the image
#   source config.sh && bash dev/run_docker.sh bash run_llama31.sh
#                                                   the configured runs, inside the image
#   bash dev/run_docker.sh --dry-run [COMMAND...]   print the docker command, run nothing
#
# The folders config.sh names (PREPROCESSED_PATH, TOKENIZER_PATH, JOB_DIR, CHECKPOINT_DIR,
# INDEX_CACHE_DIR, MODEL_CKPT, TENSORBOARD_DIR, PROFILE_DIR) are mounted at the same path inside, so
# every path means the same there; with JOB_DIR unset, the checkout's results/ is mounted as the
# image's results/ so that the results outlive the container. Every config.sh knob that is set here
# is passed in, and MODE=local: inside the image the runs start here, not through Slurm. DOCKER_IMAGE names the image
# (default llama31-8b); GPUS_PER_NODE=0 runs without GPUs.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=dev/lib.sh
source "${repo_root}/dev/lib.sh"

dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then
    dry_run=1
    shift
fi
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    llama31_usage "${BASH_SOURCE[0]}"
    exit 0
fi

args=(run --rm --ipc=host --ulimit memlock=-1 --ulimit stack=67108864)
if [[ "${GPUS_PER_NODE:-}" != 0 ]]; then
    args+=(--gpus all)
fi
# Interactive by default; a given command gets a terminal only when there is one.
if (($# == 0)); then
    args+=(-it)
    set -- bash
elif [[ -t 0 && -t 1 ]]; then
    args+=(-it)
fi

problems=()
for name in "${LLAMA31_PATH_KNOBS[@]}"; do
    path="${!name:-}"
    [[ -n "${path}" ]] || continue
    if [[ "${path}" != /* ]]; then
        path="${PWD}/${path}"
    fi
    if ! llama31_mountable "${path}"; then
        problems+=("${name}=${path} contains ',' or ':', which a docker --volume cannot hold")
    fi
    # Made here, owned by the caller, rather than by the Docker daemon as root.
    if [[ "${name}" =~ ^(JOB_DIR|CHECKPOINT_DIR|TENSORBOARD_DIR|PROFILE_DIR)$ ]] && ((!dry_run)); then
        mkdir -p "${path}"
    fi
    args+=(--volume "${path}:${path}" --env "${name}=${path}")
done
if [[ -z "${JOB_DIR:-}" ]]; then
    ((dry_run)) || mkdir -p "${repo_root}/results"
    args+=(--volume "${repo_root}/results:${LLAMA31_CONTAINER_REPO}/results")
fi
if ((${#problems[@]})); then
    printf 'error: %s\n' "${problems[@]}" >&2
    exit 2
fi

# The other knobs of config.sh that are set here.
# (MODE is set below; the path knobs were passed above.)
mapfile -t knob_names < <(llama31_knob_names "${repo_root}")
for name in "${knob_names[@]}"; do
    case " MODE DOCKER_IMAGE ${LLAMA31_PATH_KNOBS[*]} " in
        *" ${name} "*) continue ;;
    esac
    if [[ -n "${!name:-}" ]]; then
        args+=(--env "${name}=${!name}")
    fi
done
# W&B's own settings (WANDB_MODE, WANDB_ENTITY, ...) for WANDB_PROJECT, and the NCCL, PyTorch and
# TransformerEngine settings docs/CLUSTER.md lists (NCCL_*, TORCH_NCCL_*, NVTE_*,
# CUDA_DEVICE_MAX_CONNECTIONS, PYTORCH_CUDA_ALLOC_CONF), by name, so their values stay out of the
# printed command; the container sees no other variable of this shell.
while read -r name; do
    args+=(--env "${name}")
done < <(compgen -e | grep -E '^(WANDB_|NCCL_|TORCH_NCCL_|NVTE_|CUDA_DEVICE_MAX_CONNECTIONS$|PYTORCH_CUDA_ALLOC_CONF$)' || true)
args+=(--env MODE=local "${DOCKER_IMAGE:-llama31-8b}" "$@")

if ((dry_run)); then
    out="docker"
    for a in "${args[@]}"; do out+=" $(printf '%q' "${a}")"; done
    echo "${out}"
    exit 0
fi
exec docker "${args[@]}"
