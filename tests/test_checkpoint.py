"""Checkpoint and resume: a run paused after a block and resumed equals an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark import checkpoint
from benchmark.config import ConfigError
from benchmark.train import run
from tests.helpers import TINY_MODEL, mllog_events, smoke_config

TINY = {
    **TINY_MODEL,
    "LOG_EVERY": "1000",
    "GBS": "16",
    "MBS": "8",
    "EVAL_EVERY": "32",
    "EVAL_SAMPLES": "8",
    "MAX_TRAIN_SAMPLES": "96",
    "TARGET": "0.01",
    "SEED": "3",
}


def configure(smoke_data, tmp_path, **extra):
    return smoke_config(smoke_data, tmp_path, {**TINY, **extra})


def test_pause_and_resume_equals_uninterrupted(smoke_data, tmp_path):
    whole = run(configure(smoke_data, tmp_path), log_path=tmp_path / "whole.log", echo=False)
    assert whole.steps == 6 and len(whole.eval_curve) == 3

    ckpt = tmp_path / "ckpt"
    first = run(
        configure(smoke_data, tmp_path, CHECKPOINT_DIR=ckpt, JOB_SAMPLES=32),
        log_path=tmp_path / "part1.log",
        echo=False,
    )
    assert first.status == "aborted" and first.reason.startswith("paused after JOB_SAMPLES=32") and first.paused
    assert first.samples == 32 and (ckpt / "latest").read_text().strip() == "iter_0000002"
    assert not list(ckpt.glob("*.tmp"))

    second = run(
        configure(smoke_data, tmp_path, CHECKPOINT_DIR=ckpt, JOB_SAMPLES=0), log_path=tmp_path / "part2.log", echo=False
    )
    # same losses step for step, same evaluation curve, same end
    assert first.train_losses + second.train_losses == whole.train_losses
    assert second.eval_curve == whole.eval_curve
    assert (second.steps, second.samples, second.status) == (6, 96, "aborted")
    events = mllog_events(tmp_path / "part2.log")
    values = {e["key"]: e["value"] for e in events}
    assert values["init_checkpoint_step"] == 2
    assert [e["metadata"]["samples_count"] for e in events if e["key"] == "block_start"] == [32, 64]


def test_save_every_block_and_latest_pointer(smoke_data, tmp_path):
    ckpt = tmp_path / "ckpt"
    run(
        configure(smoke_data, tmp_path, CHECKPOINT_DIR=ckpt, SAVE_CKPT=1, MAX_TRAIN_SAMPLES=96),
        log_path=tmp_path / "save.log",
        echo=False,
    )
    # saved after blocks 1 and 2 (the third ends the run); only the newest is kept
    assert sorted(p.name for p in ckpt.iterdir()) == ["iter_0000004", "latest"]
    assert checkpoint.latest_checkpoint(ckpt) == ckpt / "iter_0000004"
    # a stale pointer is reported, not followed
    (ckpt / "latest").write_text("iter_0000099\n")
    with pytest.raises(checkpoint.CheckpointError, match="names iter_0000099, which does not exist"):
        checkpoint.latest_checkpoint(ckpt)


def test_checkpoint_knob_validation(smoke_data, tmp_path):
    with pytest.raises(ConfigError, match="SAVE_CKPT=1 or JOB_SAMPLES needs CHECKPOINT_DIR"):
        configure(smoke_data, tmp_path, SAVE_CKPT=1)
    with pytest.raises(ConfigError, match="JOB_SAMPLES=40 must be 0 or a multiple of EVAL_EVERY=32"):
        configure(smoke_data, tmp_path, CHECKPOINT_DIR=tmp_path, JOB_SAMPLES=40)
    with pytest.raises(ConfigError, match="USE_CKPT=1 needs MODEL_CKPT"):
        configure(smoke_data, tmp_path, USE_CKPT=1)


def test_paused_job_exits_zero_so_the_chain_goes_on(smoke_data, tmp_path, monkeypatch):
    from benchmark.train import main

    env = {
        "PRESET": "smoke",
        "DEVICE": "cpu",
        "PREPROCESSED_PATH": str(smoke_data.data_dir),
        "TOKENIZER_PATH": str(smoke_data.tokenizer_dir),
        "RESULT_DIR": str(tmp_path),
        **TINY,
        "MAX_TRAIN_SAMPLES": "64",
        "CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "JOB_SAMPLES": "32",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    valid = ["--valid-file", Path(smoke_data.valid_prefix).name]
    assert main([*valid, "--log-file", str(tmp_path / "p1.log")]) == 0  # paused: not a failure
    monkeypatch.setenv("JOB_SAMPLES", "0")
    # the resumed job ends at MAX_TRAIN_SAMPLES without reaching TARGET=0.01: aborted, exit 1
    assert main([*valid, "--log-file", str(tmp_path / "p2.log")]) == 1
    assert mllog_events(tmp_path / "p2.log")[-1]["metadata"]["status"] == "aborted"


def test_checkpoint_records_what_it_was_saved_with_and_refuses_another_spec(smoke_data, tmp_path):
    """A checkpoint names its layer spec and optimizer layout; one whose optimizer state follows the
    saving spec's parameter order is refused, with the knobs to change, under another spec."""
    from types import SimpleNamespace

    from megatron.core import dist_checkpointing

    ckpt = tmp_path / "ckpt"
    run(configure(smoke_data, tmp_path, CHECKPOINT_DIR=ckpt, JOB_SAMPLES=32), log_path=tmp_path / "p1.log", echo=False)
    saved = dist_checkpointing.load_common_state_dict(str(ckpt / "iter_0000002"))["run"]["saved_with"]
    assert saved == {"layer_spec": "local", "optimizer_format": "torch"}

    def engine(spec: str, fmt: str):
        return SimpleNamespace(cfg=SimpleNamespace(parallel=SimpleNamespace(layer_spec=spec)), optimizer_format=fmt)

    path = ckpt / "iter_0000002"
    checkpoint._check_compatible(path, {"layer_spec": "te", "optimizer_format": "portable"}, engine("local", "fast"))
    checkpoint._check_compatible(path, {"layer_spec": "te", "optimizer_format": "fast"}, engine("te", "portable"))
    checkpoint._check_compatible(path, {}, engine("te", "fast"))  # saved before the record existed
    with pytest.raises(
        checkpoint.CheckpointError,
        match=r"LAYER_SPEC=te with CKPT_FORMAT=fast.*"
        r"resume with LAYER_SPEC=te, or save with CKPT_FORMAT=portable",
    ):
        checkpoint._check_compatible(path, {"layer_spec": "te", "optimizer_format": "fast"}, engine("local", "fast"))
    with pytest.raises(checkpoint.CheckpointError, match="saved by a CPU run and this run is on GPU"):
        checkpoint._check_compatible(path, saved, engine("local", "fast"))
