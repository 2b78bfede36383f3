"""The configuration checked before a run: `python -m benchmark.config` for a job on another machine
(a login node's own python3, no project dependencies) and `benchmark.train --print-config` as a question.

Run: bash dev/test.sh tests/test_config_check.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _env(**knobs: str) -> dict[str, str]:
    """Only what a login node's shell would pass: no knob of the developer's shell leaks in."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **knobs}


def check(*args: str, stdlib_only: bool = True, **knobs: str) -> subprocess.CompletedProcess:
    """`python -m benchmark.config ARGS`; with stdlib_only, under -S: no site-packages at all, so an
    import of PyTorch, mlperf-logging or yaml fails as it would on a bare login node."""
    flags = ["-S"] if stdlib_only else []
    return subprocess.run(
        [sys.executable, *flags, "-m", "benchmark.config", *args],
        cwd=REPO,
        env=_env(**knobs),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_layout_the_trainer_rejects_is_refused_with_only_the_standard_library():
    # 4 nodes x 8 GPUs at TP=1: DP=32 does not divide GBS 16.
    proc = check("--print-config", "--job-device", "cuda", WORLD_SIZE="32", PRESET="llama31_8b", GBS="16", TP="1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error: GBS=16 is not divisible by MBS x data-parallel size = 1 x 32" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_fp8_on_the_jobs_gpus_is_left_to_the_job_and_the_rest_resolved(tmp_path):
    data, tok = tmp_path / "data", tmp_path / "tok"
    data.mkdir()
    tok.mkdir()
    for name in ("c4-train.en_6_text_document", "c4-validation-91205-samples.en_text_document"):
        (data / f"{name}.idx").write_bytes(b"")
    proc = check(
        "--print-config",
        "--job-device",
        "cuda",
        WORLD_SIZE="16",
        PRESET="llama31_8b",
        FP8="1",
        PREPROCESSED_PATH=str(data),
        TOKENIZER_PATH=str(tok),
    )
    assert proc.returncode == 0, proc.stderr
    body, _, notes = proc.stdout.partition("\n}\n")
    cfg = json.loads(body + "\n}")
    p = cfg["parallel"]
    assert (p["fp8"], p["device"], p["layer_spec"]) == (True, "cuda", "auto")
    assert cfg["train"]["global_batch_size"] == 16 and cfg["train"]["lr"] == 0.0  # RCP value: the job's
    assert "# left to the job: LAYER_SPEC=auto: whether TransformerEngine imports" in notes
    assert "# left to the job: LR, WARMUP_SAMPLES, MAX_TRAIN_SAMPLES: the RCP defaults of GBS=16" in notes
    # It follows the spec the job's node resolves.
    assert p["precision_aware_optimizer"] == "auto" and "PRECISION_AWARE_OPTIMIZER=auto" in notes


def test_with_mlperf_logging_the_rcp_defaults_are_filled_in_for_the_job():
    proc = check("--print-config", "--job-device", "cuda", stdlib_only=False, WORLD_SIZE="2", FP8="1")
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(proc.stdout[: proc.stdout.index("\n}\n") + 2])
    assert cfg["train"]["lr"] == pytest.approx(2e-3)  # the smoke preset's own
    assert "RCP defaults" not in proc.stdout


@pytest.mark.parametrize(
    "device, knobs, message",
    [
        ("cuda", {"FP8": "1", "PRECISION": "fp32"}, "FP8=1 trains with bf16 weights and fp32 master weights"),
        ("cuda", {"FP8": "1", "LAYER_SPEC": "local"}, "but LAYER_SPEC=local was asked for"),
        ("cpu", {"FP8": "1"}, "but the jobs run on CPU (DEVICE=cpu, or GPUS_PER_NODE=0)"),
        ("cuda", {"FP8": "1", "DEVICE": "cpu"}, "but the jobs run on CPU"),
        (
            "cuda",
            {"FP8": "1", "HIDDEN_SIZE": "120", "NUM_HEADS": "4", "NUM_KV_GROUPS": "2"},
            "FP8=1 needs GEMM sizes divisible by 16",
        ),
        ("cpu", {"LAYER_SPEC": "te"}, "LAYER_SPEC=te runs on GPUs only"),
        ("cpu", {"PRECISION_AWARE_OPTIMIZER": "on"}, "PRECISION_AWARE_OPTIMIZER=on needs the TransformerEngine"),
        ("cuda", {"PRECISION_AWARE_OPTIMIZER": "on", "LAYER_SPEC": "local"}, "but LAYER_SPEC=local was asked for"),
        ("any", {"PRECISION_AWARE_OPTIMIZER": "on", "PRECISION": "fp32"}, "set PRECISION=bf16 or auto"),
        ("any", {"CP": "2", "SEQ_LENGTH": "255", "WORLD_SIZE": "2"}, "SEQ_LENGTH=255 is not divisible by 2 x CP"),
        ("any", {"FP8_RECIPE": "mxfp8"}, "FP8_RECIPE='mxfp8' must be one of tensorwise, delayed, blockwise"),
        ("any", {"PRESET": "llama31_8b"}, "PREPROCESSED_PATH is not set"),
    ],
)
def test_combinations_invalid_on_any_machine_are_refused(device, knobs, message):
    proc = check("--job-device", device, **knobs)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_check_on_this_machine_still_looks_for_transformer_engine():
    proc = check("--print-config", stdlib_only=False, DEVICE="cuda", LAYER_SPEC="te")
    assert proc.returncode == 2
    assert "LAYER_SPEC=te needs TransformerEngine, which is not installed here" in proc.stderr
    proc = check("--print-config", "--job-device", "cuda", DEVICE="cuda", LAYER_SPEC="te")
    assert proc.returncode == 0, proc.stderr
    assert "# left to the job: LAYER_SPEC=te: whether TransformerEngine imports on the job's node" in proc.stdout


# ----------------------------------------------------------------------------------------------
# benchmark.train --print-config: a question, not a run


def train(*args: str, **knobs: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmark.train", *args],
        cwd=REPO,
        env=_env(**knobs),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_print_config_without_data_paths_prints_them_as_missing():
    proc = train("--preset", "llama31_8b", "--print-config")
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(proc.stdout)
    assert cfg["preset"] == "llama31_8b" and cfg["data"]["data_dir"] == "" and cfg["train"]["lr"] == 4e-4
    assert "PREPROCESSED_PATH: not set (a run needs it" in proc.stderr
    assert "TOKENIZER_PATH: not set (a run needs it" in proc.stderr
    proc = train("--preset", "llama31_8b", "--print-config", TOKENIZER_PATH="/some/tokenizer")
    assert "PREPROCESSED_PATH: not set" in proc.stderr and "TOKENIZER_PATH" not in proc.stderr


def test_a_run_without_data_paths_still_stops_before_it_starts(tmp_path):
    proc = train("--preset", "llama31_8b", RESULT_DIR=str(tmp_path / "results"))
    assert proc.returncode == 2
    assert "error: PREPROCESSED_PATH is not set: point it at the folder with the tokenized C4 files" in proc.stderr
    assert "Traceback" not in proc.stderr and "init_start" not in proc.stdout
    assert not (tmp_path / "results").exists()
