# shellcheck shell=bash
# Sourced by run_llama31.sh and dev/test.sh: makes the Python that runs the project ready.
# Inside the container the image already holds every dependency, so nothing is installed.
# Elsewhere a virtual environment .venv at the repository root is created once and reused;
# it is reinstalled only when a requirements file changes (a hash of them is kept in the venv).
# Usage: source dev/venv.sh [dev]   ("dev" adds the test dependencies)
# A script that sources it without an argument must do so from inside a function (see
# llama31_use_venv in dev/lib.sh): a bare `source FILE` with no arguments hands the file the script's own
# positional parameters, and an argument such as --help would otherwise pick the requirements set.

case "${1:-}" in
    "" | dev) _venv_kind="${1:-run}" ;;
    *)
        echo "error: dev/venv.sh takes no argument or 'dev', not '${1}' (source dev/venv.sh [dev]; a script that wants the plain environment sources it from a function, so that its own arguments do not reach it)" >&2
        return 2
        ;;
esac

_repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ -n "${LLAMA31_CONTAINER:-}" ]]; then
    PYTHON="${PYTHON:-python}"
else
    _venv="${LLAMA31_VENV:-${_repo_root}/.venv}"
    _reqs=("${_repo_root}/requirements-torch.txt" "${_repo_root}/requirements.txt")
    if [[ "${_venv_kind}" == dev ]]; then
        _reqs+=("${_repo_root}/requirements-dev.txt")
    fi
    _stamp_want="$(cat "${_reqs[@]}" | sha256sum | cut -d' ' -f1)"
    _stamp_file="${_venv}/.requirements-${_venv_kind}.sha256"
    if [[ ! -x "${_venv}/bin/python" ]]; then
        echo "[setup] creating virtual environment ${_venv}" >&2
        "${PYTHON_FOR_VENV:-python3}" -m venv "${_venv}"
    fi
    if [[ "$(cat "${_stamp_file}" 2>/dev/null)" != "${_stamp_want}" ]]; then
        echo "[setup] installing pinned requirements into ${_venv} (once)" >&2
        _pip_args=()
        for _r in "${_reqs[@]}"; do _pip_args+=(-r "${_r}"); done
        "${_venv}/bin/python" -m pip install -q --disable-pip-version-check "${_pip_args[@]}"
        echo "${_stamp_want}" > "${_stamp_file}"
    fi
    PYTHON="${_venv}/bin/python"
fi
export PYTHON
unset _venv_kind _repo_root _venv _reqs _stamp_want _stamp_file _pip_args _r
