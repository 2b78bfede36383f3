"""Data parallelism on CPU: two gloo processes (torch DDP) train exactly as one process does.

tests/dp_worker.py runs under `torchrun --nproc-per-node 2` a whole run of a tiny configuration
and the same run paused after its first block and resumed from its checkpoint; one process runs the
whole run here. The global batch at the same GBS is the same samples either way (each replica reads
its contiguous half), so the per-step training losses and the evaluation losses must agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.config import ConfigError, validate
from benchmark.train import run
from tests.dp_worker import KNOBS
from tests.helpers import mllog_events, smoke_config

REPO = Path(__file__).resolve().parents[1]
# Only the order of the fp32 additions differs between one process and two: two half-batch gradients
# averaged by DDP's all-reduce instead of one accumulation over the four micro-batches. Measured: equal
# losses for the first two steps, then about one fp32 rounding step (relative 6e-8) apart, and 1e-9
# for the fp64-summed evaluations. 1e-5 keeps a wide margin over that, while a replica training on
# the wrong share of a batch changes the next loss by more than 1e-4.
RTOL = 1e-5


def torchrun_env() -> dict[str, str]:
    # The test's own torch.distributed variables, if any, must not leak into the launched ranks.
    drop = {"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def two_processes(smoke_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("dp2")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        str(REPO / "tests" / "dp_worker.py"),
        str(out),
        str(smoke_data.data_dir),
        str(smoke_data.tokenizer_dir),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=torchrun_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out, json.loads((out / "result.json").read_text()), proc.stdout


def test_two_cpu_processes_train_as_one(two_processes, smoke_data, tmp_path):
    out, two, _ = two_processes
    one = run(smoke_config(smoke_data, tmp_path, KNOBS), log_path=tmp_path / "one.log", echo=False)
    assert (one.steps, one.samples) == (two["whole"]["steps"], two["whole"]["samples"]) == (6, 96)
    assert two["whole"]["train_losses"] == pytest.approx(one.train_losses, rel=RTOL, abs=0)
    assert [s for s, _ in two["whole"]["eval_curve"]] == [s for s, _ in one.eval_curve] == [32, 64, 96]
    assert [v for _, v in two["whole"]["eval_curve"]] == pytest.approx([v for _, v in one.eval_curve], rel=RTOL, abs=0)
    # Training moved the model: equal curves are not two untrained models agreeing.
    assert one.train_losses[-1] < one.train_losses[0] - 0.05


def test_two_cpu_processes_resume_exactly(two_processes):
    _, two, _ = two_processes
    whole, first, second = two["whole"], two["part1"], two["part2"]
    assert first["reason"].startswith("paused after JOB_SAMPLES=32") and first["samples"] == 32
    # Same processes, same additions: the resumed run equals the uninterrupted one bit for bit.
    assert first["train_losses"] + second["train_losses"] == whole["train_losses"]
    assert second["eval_curve"] == whole["eval_curve"]


def test_two_cpu_processes_write_one_log_with_one_seed(two_processes):
    out, _, stdout = two_processes
    # Rank 0 alone writes the MLPerf log (and its .config.json), one per run.
    assert sorted(p.name for p in out.glob("*.log")) == ["part1.log", "part2.log", "whole.log"]
    events = mllog_events(out / "whole.log")
    assert [e["value"] for e in events if e["key"] == "seed"] == [3]
    assert [e["key"] for e in events].count("run_start") == 1
    assert [e["key"] for e in events].count("run_stop") == 1
    values = {e["key"]: e["value"] for e in events}
    # GBS 16 over 2 replicas of MBS 4: two micro-batches each.
    assert values["gradient_accumulation_steps"] == 2
    assert values["submission_platform"].startswith("2xCPU")
    # Rank 0 alone prints: the resumed job reports its resume once, not once per rank.
    assert stdout.count("[checkpoint] resumed from") == 1


def test_model_parallel_on_cpu_is_refused(smoke_data, tmp_path):
    cfg = smoke_config(smoke_data, tmp_path, KNOBS)
    cfg.parallel.tensor_parallel = 2
    with pytest.raises(ConfigError, match="TP=2 and PP=1 on CPU: the CPU engine has data parallelism only"):
        validate(cfg, world_size=2)
