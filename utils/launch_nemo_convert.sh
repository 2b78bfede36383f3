#!/usr/bin/env bash
# Slurm job: convert a Hugging Face Llama checkpoint to NeMo 2 (or back) on one CPU node.
#
#   sbatch utils/launch_nemo_convert.sh HF_DIR NEMO_DIR            Hugging Face -> NeMo 2
#   sbatch utils/launch_nemo_convert.sh --to-hf NEMO_DIR HF_DIR    NeMo 2 -> Hugging Face
#   bash utils/launch_nemo_convert.sh ...                          the same, here, without Slurm
#
# Paths must be visible from the node (a shared file system). With IMAGE set (config.sh), the
# conversion runs in that image through pyxis (srun --container-image), with the source's and the
# destination's parent folders mounted at the same paths; otherwise in this checkout's environment
# (.venv, made by dev/venv.sh). Converting the 8B model takes one full copy of the weights in host
# memory (about 16 GB in bf16) plus one layer, hence --mem below; see docs/CONVERT.md.
#SBATCH --job-name=llama31-convert
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --time=01:00:00
#SBATCH --output=convert-%j.out
set -euo pipefail

usage() {
    sed -n '2,/^set -euo pipefail$/{/^#SBATCH/d;/^set /d;s/^# \{0,1\}//;p}' "$0"
}

direction=hf-to-nemo
if [[ "${1:-}" == "--to-hf" ]]; then
    direction=nemo-to-hf
    shift
fi
case "${1:-}" in
    -h | --help) usage; exit 0 ;;
esac
if [[ $# -ne 2 ]]; then
    usage >&2
    exit 2
fi
src="$(realpath -m "$1")"
dst="$(realpath -m "$2")"

# Under sbatch the script runs from a spool copy: the repository is where the job was submitted from.
repo_root="${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
if [[ ! -f "${repo_root}/utils/convert.py" ]]; then
    echo "error: ${repo_root} is not the repository root: submit from there (sbatch utils/launch_nemo_convert.sh ...)" >&2
    exit 2
fi
cd "${repo_root}"
# shellcheck source=dev/lib.sh
source dev/lib.sh
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning}"

convert=(-m utils.convert "${direction}" --src "${src}" --dst "${dst}")
echo "[convert] ${direction}: ${src} -> ${dst}"
if [[ -n "${IMAGE:-}" ]]; then
    # The image holds the repository at its WORKDIR (Dockerfile); the data folders are mounted at
    # their own paths.
    mounts="$(dirname "${src}"):$(dirname "${src}"),$(dirname "${dst}"):$(dirname "${dst}")"
    exec srun --ntasks=1 --container-image="${IMAGE}" --container-workdir="${LLAMA31_CONTAINER_REPO}" \
        --container-mounts="${mounts}" python "${convert[@]}"
fi
llama31_use_venv
if [[ -n "${SLURM_JOB_ID:-}" ]]; then
    exec srun --ntasks=1 "${PYTHON}" "${convert[@]}"
fi
exec "${PYTHON}" "${convert[@]}"
