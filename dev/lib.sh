# shellcheck shell=bash
# What the project's shell scripts share: sourced by run_llama31.sh (and its dev/launch/ parts),
# preprocess.sh, dev/run_docker.sh, dev/synthetic_c4.sh, compliance/check.sh and utils/*.sh.
# Sourcing it only defines (the names below, all prefixed llama31_ or LLAMA31_); it runs nothing,
# sets no shell option and changes no variable of the caller's.
#
#   source "${repo_root}/dev/lib.sh"

# The repository's place inside the image (the Dockerfile's WORKDIR): pyxis --container-workdir,
# and where dev/run_docker.sh mounts results/.
# shellcheck disable=SC2034  # read by the scripts that source this file
LLAMA31_CONTAINER_REPO=/workspace/llama31

# The path knobs of config.sh ("Paths", MODEL_CKPT and the monitoring folders): made absolute by the
# launcher, since jobs run elsewhere, and mounted at the same path inside a container (pyxis or
# docker), so that every path means the same there.
# shellcheck disable=SC2034  # read by the scripts that source this file
LLAMA31_PATH_KNOBS=(PREPROCESSED_PATH TOKENIZER_PATH SMOKE_DATA_DIR JOB_DIR CHECKPOINT_DIR INDEX_CACHE_DIR MODEL_CKPT TENSORBOARD_DIR
    PROFILE_DIR)

# The help of a script: its leading comment block (from line 2 up to `set -euo pipefail`), without
# the comment marks and without #SBATCH lines.
llama31_usage() { # script
    sed -n '2,/^set -euo pipefail$/{/^#SBATCH/d;/^set /d;s/^# \{0,1\}//;p}' "$1"
}

# The knob names config.sh exports, in its order.
llama31_knob_names() { # repo root
    sed -n 's/^export \([A-Z][A-Z0-9_]*\)=.*/\1/p' "$1/config.sh"
}

# The interpreter of a script that runs one of the project's Python modules outside a container:
# PYTHON, else the checkout's .venv (made by dev/venv.sh), else python3. The launcher and the
# conversion job make the .venv instead (llama31_use_venv).
llama31_python() { # repo root
    if [[ -n "${PYTHON:-}" ]]; then
        printf '%s' "${PYTHON}"
    elif [[ -x "$1/.venv/bin/python" ]]; then
        printf '%s' "$1/.venv/bin/python"
    else
        printf '%s' python3
    fi
}

# The project runs from the repository root without being installed: its packages are made
# importable without changing the caller's folder.
llama31_export_pythonpath() { # repo root
    export PYTHONPATH="$1${PYTHONPATH:+:${PYTHONPATH}}"
}

# dev/venv.sh (sets and exports PYTHON), sourced from a function: a bare `source` in a script would
# hand it the script's own arguments (--help, --print-config, ...), which it would take for a
# requirements set.
llama31_use_venv() {
    # shellcheck source=dev/venv.sh
    source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
}

# Whether a path can be one entry of a container mount list: pyxis --container-mounts separates
# entries with ',' and source from target with ':', and so does docker --volume.
llama31_mountable() { # path
    [[ "$1" != *[,:]* ]]
}

# The problems a script collected, all together, then exit status 2; nothing when there are none.
llama31_exit_on_problems() { # what cannot run ("the configuration cannot run (...)"), problem...
    (($# > 1)) || return 0
    echo "error: $1:" >&2
    shift
    printf '  - %s\n' "$@" >&2
    exit 2
}
