"""Early stops (benchmark.preempt): SIGTERM, SIGUSR1 and EXIT_DURATION_MINS end the job at a safe point
with a closed MLPerf log and a checkpoint, and the job that resumes from it ends where an uninterrupted
run ends."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmark import checkpoint, preempt
from benchmark.config import ConfigError
from benchmark.train import run
from tests.helpers import TINY_MODEL, mllog_events, smoke_config

REPO = Path(__file__).resolve().parents[1]
# Two blocks of four steps (GBS 16, an evaluation every 64 samples), never reaching the target.
TINY = {
    **TINY_MODEL,
    "LOG_EVERY": "1",
    "GBS": "16",
    "MBS": "8",
    "EVAL_EVERY": "64",
    "EVAL_SAMPLES": "8",
    "MAX_TRAIN_SAMPLES": "128",
    "TARGET": "0.01",
    "SEED": "3",
}


def configure(smoke_data, tmp_path, **extra):
    return smoke_config(smoke_data, tmp_path, {**TINY, **extra})


@pytest.fixture(scope="module")
def whole(smoke_data, tmp_path_factory):
    """The uninterrupted run every stopped-and-resumed run is held against."""
    tmp_path = tmp_path_factory.mktemp("whole")
    result = run(configure(smoke_data, tmp_path), log_path=tmp_path / "whole.log", echo=False)
    assert (result.steps, len(result.eval_curve)) == (8, 2)
    return result


def run_stop_of(log: Path) -> dict:
    last = mllog_events(log)[-1]
    assert last["key"] == "run_stop", f"{log} does not end with run_stop"
    return last["metadata"]


def resume_and_compare(smoke_data, tmp_path, ckpt: Path, whole, done_steps: int) -> None:
    """A job resumed from ckpt trains the remaining steps with the uninterrupted run's losses."""
    rest = run(configure(smoke_data, tmp_path, CHECKPOINT_DIR=ckpt), log_path=tmp_path / "rest.log", echo=False)
    assert rest.train_losses == whole.train_losses[done_steps:]
    assert rest.eval_curve == whole.eval_curve
    assert (rest.steps, rest.samples, rest.stopped) == (8, 128, False)
    # the resumed part's log picks up mid-block where the stop left it, and evaluates at 64 and 128 only
    events = mllog_events(tmp_path / "rest.log")
    assert [e["metadata"]["samples_count"] for e in events if e["key"] == "block_start"][0] == 16 * done_steps
    assert [e["metadata"]["samples_count"] for e in events if e["key"] == "eval_accuracy"] == [
        s for s in (64, 128) if s > 16 * done_steps
    ]


# A wrapper around the real entry point that slows every training step down, so that the signal,
# sent once step 5 is printed (after the first evaluation), lands inside the run, not after its end.
SLOW_ENTRY = textwrap.dedent("""
    import sys, time
    from benchmark import engine
    step = engine.LocalEngine.train_step
    def slow(self, micro, lr):
        out = step(self, micro, lr)
        time.sleep(0.4)
        return out
    engine.LocalEngine.train_step = slow
    from benchmark.train import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigterm_mid_run_closes_the_log_saves_and_the_resumed_job_ends_the_same(smoke_data, tmp_path, whole):
    from compliance.check import check_log

    ckpt = tmp_path / "ckpt"
    env = {
        **os.environ,
        **TINY,
        "PRESET": "smoke",
        "DEVICE": "cpu",
        "PREPROCESSED_PATH": str(smoke_data.data_dir),
        "TOKENIZER_PATH": str(smoke_data.tokenizer_dir),
        "RESULT_DIR": str(tmp_path),
        "CHECKPOINT_DIR": str(ckpt),
        "PYTHONWARNINGS": "ignore",
    }
    log = tmp_path / "part1.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SLOW_ENTRY,
            "--valid-file",
            Path(smoke_data.valid_prefix).name,
            "--log-file",
            str(log),
            "--no-check",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("[train] step 5 "):
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=120)
    out = "".join(lines) + out
    assert proc.returncode == preempt.EXIT_STOPPED, out + err

    steps = [int(m) for m in re.findall(r"^\[train\] step (\d+) ", out, re.M)]
    done = steps[-1]
    assert 5 <= done < 8 and steps == list(range(1, done + 1))
    # its losses so far are the uninterrupted run's (printed to 4 decimals)
    losses = [float(m) for m in re.findall(r"^\[train\] step \d+ samples \d+ loss ([0-9.]+)", out, re.M)]
    assert losses == [round(v, 4) for v in whole.train_losses[:done]]

    stop = run_stop_of(log)
    assert stop["status"] == "aborted" and stop["samples_count"] == 16 * done
    assert stop["reason"].startswith(f"stopped by SIGTERM (time limit, preemption or scancel) at step {done} ")
    assert "SIGTERM received" in err
    assert "[stop] stopped by SIGTERM" in out and f"exit status {preempt.EXIT_STOPPED}" in out
    assert checkpoint.latest_checkpoint(ckpt) == ckpt / f"iter_{done:07d}"
    # The checker reads it as a whole run that stopped early, as it reads a JOB_SAMPLES pause: the
    # objections are only those of any unconverged run (the target, the status), none of structure.
    # (A part stopped before its first evaluation would also lack the eval_accuracy every log holds.)
    report = check_log(log, profile="smoke")
    assert report.status == "aborted" and report.eval_curve == [(64, pytest.approx(whole.eval_curve[0][1]))]
    objections = sorted((f.origin, f.rule.split(";")[0]) for f in report.failures)
    assert objections == [
        ("official checker", "no eval_accuracy reached the target (<= 0.01)"),
        ("run summary", "run_stop status is 'aborted' and no eval_accuracy reached the target"),
    ], report.format()

    resume_and_compare(smoke_data, tmp_path, ckpt, whole, done)


def test_exit_duration_mins_stops_between_steps(smoke_data, tmp_path, whole, monkeypatch):
    # A clock that moves one second per reading: the start, then one reading per safe point, so
    # 0.05 minutes (3 s) run out at the third safe point, before step 3.
    ticks = iter(range(1000))
    monkeypatch.setattr(preempt, "clock", lambda: float(next(ticks)))
    ckpt = tmp_path / "ckpt"
    first = run(
        configure(smoke_data, tmp_path, CHECKPOINT_DIR=ckpt, EXIT_DURATION_MINS="0.05"),
        log_path=tmp_path / "part1.log",
        echo=False,
    )
    assert (first.stopped, first.status, first.steps) == (True, "aborted", 2)
    assert first.reason.startswith("stopped by EXIT_DURATION_MINS=0.05 reached at step 2 (32 samples)")
    assert first.checkpoint == str(ckpt / "iter_0000002")
    assert run_stop_of(tmp_path / "part1.log") == {
        **run_stop_of(tmp_path / "part1.log"),
        "status": "aborted",
        "samples_count": 32,
        "reason": first.reason,
    }
    assert first.train_losses == whole.train_losses[:2]
    monkeypatch.setattr(preempt, "clock", preempt.time.monotonic)
    resume_and_compare(smoke_data, tmp_path, ckpt, whole, 2)


def test_signal_during_eval_is_acted_on_after_it(smoke_data, tmp_path, whole, monkeypatch):
    from benchmark import engine

    evaluate = engine.LocalEngine.evaluate

    def signalled(self, micro_batches):
        os.kill(os.getpid(), signal.SIGUSR1)
        return evaluate(self, micro_batches)

    monkeypatch.setattr(engine.LocalEngine, "evaluate", signalled)
    ckpt = tmp_path / "ckpt"
    first = run(configure(smoke_data, tmp_path, CHECKPOINT_DIR=ckpt), log_path=tmp_path / "part1.log", echo=False)
    # the evaluation finished and was logged; the stop came before the next block
    assert (first.stopped, first.steps, first.eval_curve) == (True, 4, whole.eval_curve[:1])
    assert "SIGUSR1" in first.reason
    tail = [(e["key"], e["metadata"].get("samples_count")) for e in mllog_events(tmp_path / "part1.log")][-3:]
    assert tail == [("eval_accuracy", 64), ("eval_stop", 64), ("run_stop", 64)]
    assert checkpoint.latest_checkpoint(ckpt) == ckpt / "iter_0000004"
    monkeypatch.setattr(engine.LocalEngine, "evaluate", evaluate)
    resume_and_compare(smoke_data, tmp_path, ckpt, whole, 4)


def test_signal_during_init_stops_before_the_first_step(smoke_data, tmp_path, monkeypatch):
    from benchmark import train

    build = train.build_valid_dataset

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return build(*args, **kwargs)

    monkeypatch.setattr(train, "build_valid_dataset", signalled)
    ckpt = tmp_path / "ckpt"
    result = run(configure(smoke_data, tmp_path, CHECKPOINT_DIR=ckpt), log_path=tmp_path / "init.log", echo=False)
    assert (result.stopped, result.steps, result.checkpoint) == (True, 0, "")
    assert "nothing trained yet, so no checkpoint" in result.reason
    body = [(e["key"], e["metadata"].get("samples_count")) for e in mllog_events(tmp_path / "init.log")][-4:]
    assert body == [("run_start", None), ("block_start", 0), ("block_stop", 0), ("run_stop", 0)]
    # the folder is made (and test-written) at start; nothing is saved in it
    assert sorted(p.name for p in ckpt.iterdir()) == []
    # the previous handler is back once the run is over
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_exit_duration_mins_is_validated(smoke_data, tmp_path):
    with pytest.raises(ConfigError, match="EXIT_DURATION_MINS=-1.0 must be 0"):
        configure(smoke_data, tmp_path, EXIT_DURATION_MINS="-1")
    assert configure(smoke_data, tmp_path, EXIT_DURATION_MINS="0.5").ckpt.exit_duration_mins == 0.5


# Two gloo processes: only rank 1 is signalled, or only rank 0's time is up; both must stop together.
RANKS = textwrap.dedent("""
    import os, signal, sys
    import torch
    from benchmark import preempt
    rank = int(os.environ["RANK"])
    torch.distributed.init_process_group("gloo")
    ticks = iter(range(0, 10000, 100))
    if rank == 0:
        preempt.clock = lambda: float(next(ticks))  # 100 s per reading: past 2 minutes at the second poll
    # Both ranks have the same limit (one config); only rank 0's clock runs past it.
    with preempt.StopRequest(exit_duration_mins=2.0 if sys.argv[1] == "duration" else 0.0) as stop:
        first = stop.poll()
        if rank == 1 and sys.argv[1] == "signal":
            os.kill(os.getpid(), signal.SIGUSR1)
        second = stop.poll()
        print(f"rank {rank}: {first} {second} {stop.reason}", flush=True)
    torch.distributed.destroy_process_group()
""")


@pytest.mark.parametrize(
    "cause, reason",
    [
        ("signal", "SIGUSR1 (the warning before the time limit, SIGNAL_MINUTES)"),
        ("duration", "EXIT_DURATION_MINS=2 reached"),
    ],
)
def test_every_rank_stops_at_the_same_poll(cause, reason):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RANKS, cause],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**base, "RANK": str(r), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o.strip() for o, _ in outs] == [f"rank {r}: False True {reason}" for r in range(2)]
