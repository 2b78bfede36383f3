"""Watching a run: TensorBoard and W&B scalars, the progress line, the profiler window, their knobs."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from benchmark.schedule import lr_at
from benchmark.train import main, run
from tests.helpers import TINY_MODEL, mllog_events, smoke_config

# A smaller model than the smoke preset, as tests/test_train.py runs it: seconds per run.
TINY = {
    **TINY_MODEL,
    "LOG_EVERY": "1000",
}
# Four steps of GBS 16, an evaluation after every two, never reaching the target.
SHORT = {"GBS": "16", "MBS": "8", "EVAL_EVERY": "32", "EVAL_SAMPLES": "8", "MAX_TRAIN_SAMPLES": "64", "TARGET": "0.01"}


def configure(smoke_data, tmp_path, **extra):
    return smoke_config(smoke_data, tmp_path, {**TINY, **SHORT, **extra})


def tb_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def f32(x: float) -> float:
    """TensorBoard keeps scalars as float32."""
    return float(np.float32(x))


def test_tensorboard_scalars_are_the_runs_values(smoke_data, tmp_path):
    tb = tmp_path / "tb"
    cfg = configure(smoke_data, tmp_path, TENSORBOARD_DIR=tb, SEED=7)
    result = run(cfg, log_path=tmp_path / "run.log", echo=False)
    assert result.steps == 4
    folder = tb / "smoke_seed7"
    scalars = tb_scalars(folder)
    samples = [16, 32, 48, 64]
    assert scalars["train/loss"] == [(s, f32(loss)) for s, loss in zip(samples, result.train_losses, strict=True)]
    t = cfg.train
    assert scalars["train/lr"] == [
        (s, f32(lr_at(i, base_lr=t.lr, end_lr=t.min_lr, warmup_steps=t.warmup_steps, max_steps=t.max_steps)))
        for i, s in enumerate(samples)
    ]
    assert [s for s, _ in scalars["train/grad_norm"]] == samples
    assert all(v > 0 for _, v in scalars["train/grad_norm"])
    assert [s for s, _ in scalars["train/tokens_per_s_per_device"]] == samples
    # eval loss: exactly the MLPerf log's eval_accuracy, at its samples_count
    evals = [
        (e["metadata"]["samples_count"], f32(e["value"]))
        for e in mllog_events(tmp_path / "run.log")
        if e["key"] == "eval_accuracy"
    ]
    assert scalars["eval/loss"] == evals and [s for s, _ in evals] == [32, 64]
    assert [s for s, _ in scalars["block/tokens_per_s_per_device"]] == [32, 64]
    # tokens/s of a block: its two steps' tokens over their summed step times, so between the steps' own
    steps = dict(scalars["train/tokens_per_s_per_device"])
    blocks = zip(scalars["block/tokens_per_s_per_device"], scalars["block/samples_per_s"], strict=True)
    for (s, block), (s2, per_sample) in blocks:
        assert s == s2
        assert min(steps[s - 16], steps[s]) * (1 - 1e-6) <= block <= max(steps[s - 16], steps[s]) * (1 + 1e-6)
        assert per_sample == pytest.approx(block / 64, rel=1e-5)  # 64 tokens per sample
    # CPU: no GPU memory, no MFU
    assert "train/max_memory_allocated_gib" not in scalars and "train/mfu" not in scalars
    # and the MLPerf log has none of it
    assert not [e for e in mllog_events(tmp_path / "run.log") if "/" in e["key"]]


def test_tensorboard_is_flushed_on_a_crash_and_on_a_signal_stop(smoke_data, tmp_path, monkeypatch):
    from benchmark import engine

    original = engine.LocalEngine.train_step
    calls = []

    def crashing(self, micro, lr):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return original(self, micro, lr)

    monkeypatch.setattr(engine.LocalEngine, "train_step", crashing)
    cfg = configure(smoke_data, tmp_path / "crash", TENSORBOARD_DIR=tmp_path / "tb1", SEED=3)
    with pytest.raises(RuntimeError, match="boom"):
        run(cfg, log_path=tmp_path / "crash.log", echo=False)
    assert [s for s, _ in tb_scalars(tmp_path / "tb1" / "smoke_seed3")["train/loss"]] == [16, 32]

    calls.clear()

    def signalled(self, micro, lr):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGUSR1)  # acted on at the next step boundary
        return original(self, micro, lr)

    monkeypatch.setattr(engine.LocalEngine, "train_step", signalled)
    cfg = configure(smoke_data, tmp_path / "stop", TENSORBOARD_DIR=tmp_path / "tb2", SEED=3)
    result = run(cfg, log_path=tmp_path / "stop.log", echo=False)
    assert result.stopped and result.steps == 1
    losses = tb_scalars(tmp_path / "tb2" / "smoke_seed3")["train/loss"]
    assert losses == [(16, f32(result.train_losses[0]))]


def _wandb_history(run_dir: Path) -> list[dict]:
    """The logged rows of an offline W&B run, read from its .wandb file (LevelDB-style log records)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    block, pos, pending, rows = 32768, 7, b"", []  # 7: the file's ":W&B" header
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                # a key with a "/" is stored as its nested parts
                rows.append(
                    {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                )
    return rows


def test_wandb_offline_writes_a_run_folder_with_the_values(smoke_data, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is optional (not in requirements.txt): pip install wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = configure(smoke_data, tmp_path, WANDB_PROJECT="llama31-test", SEED=9)
    result = run(cfg, log_path=tmp_path / "run.log", echo=False)
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    rows = _wandb_history(run_dir)
    train = [(r["samples"], r["train/loss"]) for r in rows if "train/loss" in r]
    assert train == list(zip([16, 32, 48, 64], result.train_losses, strict=True))
    assert [(r["samples"], r["eval/loss"]) for r in rows if "eval/loss" in r] == result.eval_curve
    assert all("train/lr" in r and "train/grad_norm" in r for r in rows if "train/loss" in r)


def test_progress_line_counts_samples_to_the_next_eval_and_its_eta(smoke_data, tmp_path, monkeypatch, capsys):
    from benchmark import engine

    original = engine.LocalEngine.train_step

    def slow(self, micro, lr):  # steps long enough for the ETA to be well above its rounding
        time.sleep(0.1)
        return original(self, micro, lr)

    monkeypatch.setattr(engine.LocalEngine, "train_step", slow)
    cfg = configure(smoke_data, tmp_path, GBS=16, EVAL_EVERY=64, MAX_TRAIN_SAMPLES=128, LOG_EVERY=1)
    run(cfg, log_path=tmp_path / "run.log", echo=False)
    pattern = re.compile(r"^\[train\] step (\d+) samples (\d+) .* step_time (\d+) ms .* \| (.*)$")
    lines = [pattern.match(line) for line in capsys.readouterr().out.splitlines() if line.startswith("[train]")]
    assert len(lines) == 8 and all(lines)
    block_times: list[float] = []
    for m in lines:
        step, samples, step_ms, tail = int(m[1]), int(m[2]), int(m[3]), m[4]
        assert samples == 16 * step
        if samples % 64 == 16:  # the first step of a block
            block_times = []
        block_times.append(step_ms / 1000)
        to_eval = (64 - samples % 64) % 64
        if to_eval == 0:
            assert tail == "eval next"
            continue
        got = re.fullmatch(r"next eval in (\d+) samples \((\d+) steps?\), eta ([\d.]+) s", tail)
        assert got, tail
        assert (int(got[1]), int(got[2])) == (to_eval, to_eval // 16)
        assert tail.count("(1 step)") == (to_eval == 16)
        expected = to_eval // 16 * sum(block_times) / len(block_times)
        # printed step times are whole ms and the ETA has one decimal
        assert abs(float(got[3]) - expected) <= 0.05 + 0.001 * (to_eval // 16), (tail, block_times)
        assert float(got[3]) >= 0.1 * (to_eval // 16) - 0.05


def test_profile_window_writes_chrome_and_tensorboard_traces(smoke_data, tmp_path):
    cfg = configure(smoke_data, tmp_path, PROFILE_STEPS="2:4", SEED=5)
    result = run(cfg, log_path=tmp_path / "run.log", echo=False)
    assert result.steps == 4
    folder = tmp_path / "profile"  # the default: under RESULT_DIR
    (trace,) = folder.glob("*.chrome_trace.json")
    assert trace.name == "smoke_seed5_rank0_steps2-4.chrome_trace.json"
    events = json.loads(trace.read_text())["traceEvents"]
    assert len(events) > 10
    steps = sorted({e["name"] for e in events if e.get("name", "").startswith("ProfilerStep#")})
    assert steps == ["ProfilerStep#2", "ProfilerStep#3"]  # steps 2 and 3, as the loop counts them
    assert any(e.get("name", "").startswith("aten::") for e in events)  # the model's own ops
    (tb,) = (folder / "tensorboard").glob("smoke_seed5_rank0.*.pt.trace.json")
    assert json.loads(tb.read_text()) == json.loads(trace.read_text())
    assert not list(folder.rglob("*.tmp"))


def test_profile_ranks_beyond_the_run_are_refused(smoke_data, tmp_path):
    import torch

    from benchmark.config import ConfigError
    from benchmark.profiling import ProfileWindow

    cfg = configure(smoke_data, tmp_path, PROFILE_STEPS="1:3", PROFILE_RANKS="0,2")
    with pytest.raises(ConfigError, match=r"PROFILE_RANKS=0,2 names rank 2, but the run has 2 process"):
        ProfileWindow(cfg, rank=0, world_size=2, device=torch.device("cpu"))
    assert ProfileWindow(cfg, rank=2, world_size=3, device=torch.device("cpu")).enabled
    assert not ProfileWindow(cfg, rank=1, world_size=3, device=torch.device("cpu")).enabled


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"PROFILE_STEPS": "4:2"}, "PROFILE_STEPS='4:2' must have 1 <= START < END"),
        ({"PROFILE_STEPS": "3:3"}, "PROFILE_STEPS='3:3' must have 1 <= START < END"),
        ({"PROFILE_STEPS": "0:3"}, "PROFILE_STEPS='0:3' must have 1 <= START < END"),
        ({"PROFILE_STEPS": "a:b"}, "PROFILE_STEPS='a:b' must be START:END"),
        ({"PROFILE_STEPS": "5"}, "PROFILE_STEPS='5' must be START:END"),
        ({"PROFILE_STEPS": "2.5:4"}, "PROFILE_STEPS='2.5:4' must be START:END"),
        (
            {"PROFILE_STEPS": "2:5", "MAX_TRAIN_SAMPLES": "64", "EVAL_EVERY": "32"},
            "PROFILE_STEPS=2:5 ends after the run's last step: MAX_TRAIN_SAMPLES / GBS = 64 / 16 = 4 steps",
        ),
        ({"PROFILE_RANKS": "0;1"}, "PROFILE_RANKS='0;1' must be ranks separated by commas"),
        ({"PROFILE_RANKS": "-1"}, "PROFILE_RANKS='-1' must be ranks separated by commas"),
        ({"PROFILE_MEMORY": "1"}, "PROFILE_MEMORY=1 acts only with PROFILE_STEPS"),
        (
            {"PROFILE_MEMORY": "1", "PROFILE_STEPS": "1:2"},
            "PROFILE_MEMORY=1 takes a CUDA memory snapshot, and this run is on CPU",
        ),
        ({"PROFILE_MEMORY": "2"}, "PROFILE_MEMORY='2' is not a valid bool"),
    ],
)
def test_bad_watch_knobs_exit_2_naming_the_knob(knobs, message, monkeypatch, capsys):
    from tests.test_launcher import config_knobs

    for name in config_knobs():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PRESET", "smoke")
    monkeypatch.setenv("DEVICE", "cpu")
    for name, value in knobs.items():
        monkeypatch.setenv(name, value)
    assert main(["--print-config"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_missing_tensorboard_or_wandb_is_named_at_validation(monkeypatch, capsys):
    from benchmark import config

    monkeypatch.setattr(config, "module_available", lambda name: name not in ("wandb", "tensorboard"))
    for knob, package in (("WANDB_PROJECT", "wandb"), ("TENSORBOARD_DIR", "tensorboard")):
        with pytest.raises(config.ConfigError, match=rf"^{knob}=x needs the {package} package"):
            config.build_config(env={"PRESET": "smoke", "DEVICE": "cpu", knob: "x"})


def test_watch_knobs_show_in_print_config(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PRESET", "smoke")
    monkeypatch.setenv("DEVICE", "cpu")
    monkeypatch.setenv("TENSORBOARD_DIR", str(tmp_path / "tb"))
    monkeypatch.setenv("PROFILE_STEPS", "3:7")
    monkeypatch.setenv("PROFILE_RANKS", "all")
    assert main(["--print-config", "--profile-dir", str(tmp_path / "p")]) == 0
    log = json.loads(capsys.readouterr().out)["log"]
    assert (log["tensorboard_dir"], log["profile_steps"], log["profile_ranks"], log["profile_dir"]) == (
        str(tmp_path / "tb"),
        "3:7",
        "all",
        str(tmp_path / "p"),
    )
    assert log["wandb_project"] == "" and log["profile_memory"] is False


def test_memory_snapshot_is_taken_over_the_window_and_a_cut_window_is_written(smoke_data, tmp_path, monkeypatch):
    """The CUDA memory calls, in order, with stand-ins (this machine has no GPU; the GPU itself is not tested here)."""
    import torch

    from benchmark.profiling import ProfileWindow

    calls = []
    monkeypatch.setattr(
        torch.cuda.memory,
        "_record_memory_history",
        lambda enabled="all", **kw: calls.append(("record", enabled, kw.get("max_entries"))),
    )

    def dump(filename):
        calls.append(("dump", Path(filename).name))
        Path(filename).write_bytes(b"snapshot")

    monkeypatch.setattr(torch.cuda.memory, "_dump_snapshot", dump)
    cfg = configure(smoke_data, tmp_path, PROFILE_STEPS="2:4", PROFILE_DIR=tmp_path / "p", SEED=4)
    cfg.log.profile_memory = True  # validation refuses it on CPU; the window's own logic is what is tested
    window = ProfileWindow(cfg, rank=0, world_size=1, device=torch.device("cuda"))
    window.device = torch.device("cpu")  # CPU activities only; the memory calls still go to the stand-ins
    for step in (1, 2, 3, 4):
        window.before_step(step)
        torch.ones(8).sum()
        window.after_step(step)
    assert calls == [
        ("record", "all", 1_000_000),
        ("dump", "smoke_seed4_rank0_steps2-4.memory_snapshot.pickle.tmp"),
        ("record", None, None),
    ]
    assert (tmp_path / "p" / "smoke_seed4_rank0_steps2-4.memory_snapshot.pickle").read_bytes() == b"snapshot"

    # A run that ends inside the window (here: after step 2 of 2:4) writes what it recorded.
    cut = ProfileWindow(cfg, rank=0, world_size=1, device=torch.device("cpu"))
    cut.before_step(2)
    torch.ones(8).sum()
    cut.after_step(2)
    assert not cut.written
    cut.close()
    assert [p.name for p in cut.written][0] == "smoke_seed4_rank0_steps2-cut.chrome_trace.json"
    events = json.loads(cut.written[0].read_text())["traceEvents"]
    assert {e["name"] for e in events if e.get("name", "").startswith("ProfilerStep#")} == {"ProfilerStep#2"}
