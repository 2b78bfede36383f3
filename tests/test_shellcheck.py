"""shellcheck over every shell script of the repository, as git tracks them."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Shell scripts without a .sh name: the CI entry and the Slurm batch scripts.
NAMED = (".ci/run",)
FOLDERS = ("dev/slurm/",)


def _is_shell(path: str) -> bool:
    if path.endswith(".sh") or path in NAMED or path.startswith(FOLDERS):
        return True
    try:
        with open(REPO / path, "rb") as f:
            first = f.readline()
    except (IsADirectoryError, FileNotFoundError):  # a submodule, or a file deleted but not yet staged
        return False
    return first.startswith(b"#!") and first.split(b"/")[-1].split()[-1] in (b"bash", b"sh")


def shell_scripts() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return sorted(p for p in listed.decode().split("\0") if p and _is_shell(p))


def test_every_shell_script_is_found():
    scripts = shell_scripts()
    for expected in (
        "run_llama31.sh",
        "config.sh",
        "preprocess.sh",
        "dev/lib.sh",
        "dev/venv.sh",
        "dev/launch/local.sh",
        "dev/launch/slurm.sh",
        "dev/slurm/llama31.sbatch",
        ".ci/run",
        "compliance/check.sh",
        "utils/launch_nemo_convert.sh",
    ):
        assert expected in scripts, (expected, scripts)
    assert "benchmark/train.py" not in scripts


def test_shell_scripts_are_shellcheck_clean():
    if not shutil.which("shellcheck"):
        if os.environ.get("CI"):
            pytest.fail("shellcheck is missing: .ci/run installs it (apt-get install shellcheck)")
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    proc = subprocess.run(["shellcheck", "-x", *shell_scripts()], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
