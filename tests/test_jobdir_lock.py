"""Two runs at once: one launch per JOB_DIR, no Slurm submission beside live jobs, one writer per MLPerf log.

The launcher is driven with the stand-in interpreter of tests/test_launcher.py behind a gate: the
first launch's training waits for a file to appear, so that a second launch meets it mid-run.
Run: bash dev/test.sh tests/test_jobdir_lock.py
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.mlperf_log import LogInUse, MLPerfLog, lock_path
from tests.test_launcher import FAKE_PYTHON, LAUNCHER, clean_env

HOST = socket.gethostname()

# In front of the stand-in: a training (not --print-config) says it started, then waits for the gate.
GATED = r"""#!/usr/bin/env bash
set -euo pipefail
if [[ " $* " != *" --print-config "* && -n "${FAKE_GATE:-}" ]]; then
  echo "$$" >> "${FAKE_GATE}.started"
  for _ in $(seq 600); do [[ -e "${FAKE_GATE}" ]] && break; sleep 0.1; done
fi
exec "$(dirname "$0")/fake-python" "$@"
"""


class Stand:
    def __init__(self, tmp_path: Path):
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        for name, text in (("fake-python", FAKE_PYTHON), ("gated-python", GATED)):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)
        self.gate = tmp_path / "gate"
        self.record = tmp_path / "calls.txt"
        self.counter = tmp_path / "counter"

    def env(self, **knobs: str) -> dict[str, str]:
        return clean_env(
            LLAMA31_CONTAINER="1",
            PYTHON=str(self.bin / "gated-python"),
            FAKE_GATE=str(self.gate),
            FAKE_RECORD=str(self.record),
            FAKE_COUNTER=str(self.counter),
            **knobs,
        )

    def calls(self) -> list[str]:
        return self.record.read_text().splitlines() if self.record.exists() else []

    def start(self, env: dict[str, str]) -> subprocess.Popen:
        """A launch whose training is held at the gate, returned once that training runs."""
        proc = subprocess.Popen(
            ["bash", str(LAUNCHER)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        started = Path(f"{self.gate}.started")
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the first launch's training never started"
            time.sleep(0.05)
        return proc

    def open_gate(self) -> None:
        self.gate.touch()


@pytest.fixture
def stand(tmp_path):
    stand = Stand(tmp_path)
    yield stand
    stand.open_gate()  # never leave a held training behind a failed assertion


def launch(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(LAUNCHER)], env=env, capture_output=True, text=True, timeout=120)


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# ----------------------------------------------------------------------------------------------
# MODE=local: JOB_DIR/.launch.lock


@pytest.mark.parametrize("second_seeds", ["6", "5"], ids=["other-seed", "same-seed"])
def test_a_second_local_launch_into_a_busy_job_dir_is_refused_naming_the_first(stand, tmp_path, second_seeds):
    jobs = tmp_path / "jobs"
    first = stand.start(stand.env(SEEDS="5", JOB_DIR=str(jobs)))
    try:
        record = (jobs / ".launch.lock").read_text()
        assert record.startswith(f"pid={first.pid} host={HOST} started=")
        assert record.endswith(" mode=local\n")
        second = launch(stand.env(SEEDS=second_seeds, JOB_DIR=str(jobs)))
        assert second.returncode == 2, second.stdout + second.stderr
        # Refused by the lock, and before the check that would only say that run01's log exists.
        assert (
            f"error: JOB_DIR={jobs} is in use by another launch: the launch of pid {first.pid} on host {HOST}, "
            "MODE=local, started "
        ) in second.stderr
        assert (
            "two launches into one JOB_DIR would train into the same runs and logs. Choose another JOB_DIR, "
            f"or wait for it to end or stop it (kill {first.pid} on {HOST}) (nothing was started or submitted)"
        ) in second.stderr
        assert "Traceback" not in second.stderr
        assert len(stand.calls()) == 0  # the first is still at the gate; the second trained nothing
        assert not (jobs / "run01_seed6").exists()
        assert (jobs / "seeds.txt").read_text() == "run01_seed5 5 given\n"
        assert (jobs / ".launch.lock").read_text() == record  # the holder's record is left as it was
    finally:
        stand.open_gate()
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, out + err
    assert (jobs / "run01_seed5" / "mlperf.log").read_text() == ":::MLLOG fake 1\n"
    # Once the first launch has ended, JOB_DIR takes another one (a new seed: a new run folder).
    third = launch(stand.env(SEEDS="7", JOB_DIR=str(jobs)))
    assert third.returncode == 0, third.stdout + third.stderr
    assert (jobs / "seeds.txt").read_text() == "run01_seed5 5 given\nrun01_seed7 7 given\n"


def test_a_lock_file_left_by_a_dead_launch_does_not_block(stand, tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    gone = dead_pid()
    (jobs / ".launch.lock").write_text(f"pid={gone} host={HOST} started=2020-01-01T00:00:00+0000 mode=local\n")
    stand.open_gate()
    proc = launch(stand.env(SEEDS="5", JOB_DIR=str(jobs)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(stand.calls()) == 1
    record = (jobs / ".launch.lock").read_text()
    assert f"pid={gone} " not in record and record.startswith("pid=") and record.endswith(" mode=local\n")


def test_a_training_that_outlives_its_killed_launcher_keeps_the_job_dir(stand, tmp_path):
    jobs = tmp_path / "jobs"
    first = stand.start(stand.env(SEEDS="5", JOB_DIR=str(jobs)))
    os.kill(first.pid, signal.SIGKILL)  # the launcher only: its training goes on, holding the lock
    first.wait(timeout=30)
    try:
        second = launch(stand.env(SEEDS="6", JOB_DIR=str(jobs)))
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"(pid {first.pid} has exited; a training it started still holds the lock)" in second.stderr
        assert f"wait for that training to end or stop it (fuser -v {jobs / '.launch.lock'} names it)" in second.stderr
        assert not (jobs / "run01_seed6").exists()
    finally:
        stand.open_gate()
    training = int(Path(f"{stand.gate}.started").read_text().split()[0])
    deadline = time.monotonic() + 60
    while Path(f"/proc/{training}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert launch(stand.env(SEEDS="6", JOB_DIR=str(jobs))).returncode == 0


def test_a_dry_run_neither_takes_nor_needs_the_lock(stand, tmp_path):
    jobs = tmp_path / "jobs"
    first = stand.start(stand.env(SEEDS="5", JOB_DIR=str(jobs)))
    try:
        dry = subprocess.run(
            ["bash", str(LAUNCHER), "--dry-run"],
            env=stand.env(SEEDS="6", JOB_DIR=str(jobs)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert (jobs / ".launch.lock").read_text().startswith(f"pid={first.pid} ")
    finally:
        stand.open_gate()
        first.communicate(timeout=60)


# ----------------------------------------------------------------------------------------------
# MODE=slurm: the jobs of JOB_DIR/jobs.txt


def _slurm(tmp_path: Path, queue: dict[str, str]) -> tuple[Path, Path]:
    """Stand-ins for sbatch (answers job ids from 5000, records calls) and squeue (answers from queue)."""
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir(exist_ok=True)
    submitted = tmp_path / "sbatch-calls.txt"
    (bin_dir / "sbatch").write_text(
        "#!/bin/bash\n"
        f'n=$(( $(wc -l < "{submitted}" 2>/dev/null || echo 0) + 1 )); echo "$*" >> "{submitted}"\n'
        "echo $((4999 + n))\n"
    )
    cases = "".join(f'  {job}) echo "{line}" ;;\n' for job, line in queue.items())
    (bin_dir / "squeue").write_text(
        "#!/bin/bash\n"
        'job=""; prev=""; for a in "$@"; do [[ "$prev" == -j ]] && job="$a"; prev="$a"; done\n'
        'case "$job" in\n'
        f"{cases}"
        '  *) echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1 ;;\n'
        "esac\n"
    )
    for tool in ("sbatch", "squeue"):
        (bin_dir / tool).chmod(0o755)
    return bin_dir, submitted


def _jobs_dir(tmp_path: Path) -> Path:
    jobs = tmp_path / "jobs"
    (jobs / "run01_seed5").mkdir(parents=True)
    (jobs / "jobs.txt").write_text("run01_seed5 1 4242\nrun01_seed5 2 4243\nrun01_seed5 3 4244\n")
    return jobs


def test_slurm_launch_refuses_a_job_dir_with_queued_or_running_jobs(stand, tmp_path):
    jobs = _jobs_dir(tmp_path)
    bin_dir, submitted = _slurm(
        tmp_path,
        {
            "4242": "4242 RUNNING llama31_run01_seed5_p1",
            "4243": "4243 PENDING llama31_run01_seed5_p2",
            "4244": "4244 PENDING someone_elses_job",  # a reused id: not this project's job
        },
    )
    env = stand.env(MODE="slurm", SEEDS="6", JOB_DIR=str(jobs), PATH=f"{bin_dir}:{os.environ['PATH']}")
    proc = launch(env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (
        f"error: JOB_DIR={jobs} has jobs of an earlier launch still queued or running ({jobs}/jobs.txt): "
        "4242 (llama31_run01_seed5_p1, RUNNING); 4243 (llama31_run01_seed5_p2, PENDING); a second launch into "
        "it would write into the same runs. Choose another JOB_DIR, or wait for them to end (squeue -j 4242,4243) "
        "or cancel them (scancel 4242 4243) (nothing was submitted)"
    ) in proc.stderr
    assert "4244" not in proc.stderr
    assert not submitted.exists()
    assert not (jobs / "run01_seed6").exists() and not (jobs / "seeds.txt").exists()
    assert (jobs / "jobs.txt").read_text().count("\n") == 3


def test_slurm_launch_goes_ahead_once_the_earlier_jobs_have_ended(stand, tmp_path):
    jobs = _jobs_dir(tmp_path)
    bin_dir, submitted = _slurm(
        tmp_path,
        {
            "4242": "4242 COMPLETED llama31_run01_seed5_p1",
            "4243": "4243 CANCELLED llama31_run01_seed5_p2",
            # 4244: forgotten by Slurm (Invalid job id), so ended
        },
    )
    env = stand.env(MODE="slurm", SEEDS="6", JOB_DIR=str(jobs), PATH=f"{bin_dir}:{os.environ['PATH']}")
    proc = launch(env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(submitted.read_text().splitlines()) == 1
    assert (jobs / "jobs.txt").read_text().splitlines()[-1] == "run01_seed6 1 5000"
    assert "warning" not in proc.stdout
    assert (jobs / ".launch.lock").read_text().endswith(" mode=slurm\n")


# ----------------------------------------------------------------------------------------------
# The training entry: one writer per MLPerf log

HOLDER = """
import sys, time
from pathlib import Path
from benchmark.mlperf_log import MLPerfLog
log = MLPerfLog(Path(sys.argv[1]), echo=False)
log.event("cache_clear", True)
print("open", flush=True)
sys.stdin.readline()
log.close()
"""


def _holder(log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(log)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.stdout.readline() == "open\n"
    return proc


def test_a_log_written_by_a_live_process_is_refused_untouched(tmp_path):
    log = tmp_path / "run" / "mlperf.log"
    holder = _holder(log)
    try:
        before = log.read_text()
        assert '"key": "cache_clear"' in before
        assert lock_path(log).read_text().startswith(f"pid {holder.pid} on host {HOST}, started ")
        with pytest.raises(LogInUse) as err:
            MLPerfLog(log, echo=False)
        message = str(err.value)
        assert message.startswith(f"{log} is being written by another run (pid {holder.pid} on host {HOST}, started ")
        assert f"lock {lock_path(log)}): two trainings must not write one MLPerf log" in message
        assert "Give this run its own log (--log-file" in message
        assert log.read_text() == before  # refused before the log was opened for writing
    finally:
        holder.communicate("\n", timeout=30)
    assert holder.returncode == 0
    assert not lock_path(log).exists()  # the writer removes its lock file when it closes the log
    after = MLPerfLog(log, echo=False)
    after.event("cache_clear", True)
    after.close()
    after.close()  # closing twice (the run's own close and the final one) is harmless
    assert not lock_path(log).exists()


def test_a_lock_file_left_by_a_killed_writer_does_not_block(tmp_path):
    log = tmp_path / "mlperf.log"
    holder = _holder(log)
    holder.kill()
    holder.wait(timeout=30)
    assert lock_path(log).exists()  # SIGKILL left the file; its lock died with the process
    log_again = MLPerfLog(log, echo=False)
    assert lock_path(log).read_text().startswith(f"pid {os.getpid()} on host {HOST}, ")
    log_again.close()
    assert not lock_path(log).exists()


def test_the_training_entry_turns_a_busy_log_into_exit_2(tmp_path, monkeypatch, capsys):
    from benchmark import train

    log = tmp_path / "mlperf.log"
    holder = _holder(log)
    try:
        monkeypatch.setattr(train, "resolve_smoke_data", lambda cfg: 0.0)  # the data are not reached
        status = train.main(["--log-file", str(log), "--no-check"])
    finally:
        holder.communicate("\n", timeout=30)
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith(f"error: {log} is being written by another run (pid {holder.pid} on host {HOST}")
    assert "Traceback" not in err
