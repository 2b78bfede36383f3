"""Stopping a job early and cleanly: SIGTERM, SIGUSR1 and a wall-time limit (EXIT_DURATION_MINS).

Slurm sends SIGTERM at a job's time limit, on preemption and on ``scancel``, and SIGUSR1 some minutes
before the limit when asked to (``sbatch --signal``, the launcher's SIGNAL_MINUTES). Killed by the
default handler, a run would leave an MLPerf log without ``run_stop`` and no checkpoint. Instead the
handler here only records that a stop was asked for; the training loop asks :meth:`StopRequest.poll`
at its safe points (between optimizer steps and after an evaluation), so a signal that arrives during
initialization, a step or an evaluation takes effect when that work is done.

Every process must stop at the same step, since the checkpoint that follows is written collectively:
a signal may reach the ranks at different moments and their clocks differ, so ``poll`` all-reduces the
local answer (the largest reason code wins) and every rank sees the same one.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import torch

# Exit status of a job that stopped early with its state saved: EX_TEMPFAIL of sysexits.h, "try
# again later". The Slurm batch script requeues such a job and the local launcher retries it, each
# within MAX_RETRIES; the new attempt resumes from the checkpoint.
EXIT_STOPPED = 75

# Reason codes, ordered so that the all-reduce's maximum picks one deterministic reason for all ranks.
_NONE, _DURATION, _SIGUSR1, _SIGTERM = 0, 1, 2, 3
_SIGNALS = {signal.SIGTERM: _SIGTERM, signal.SIGUSR1: _SIGUSR1}

# The clock the time limit is measured with (a test replaces it to make the stop step deterministic).
clock = time.monotonic


class StopRequest:
    """Whether the job should stop at the next safe point, and why.

    Use as a context manager around the run: on entry SIGTERM and SIGUSR1 get a handler that sets a
    flag (when running in the main thread, the only one Python delivers signals to), on exit the
    previous handlers come back, so several runs in one process (the tests) do not leak handlers.
    """

    def __init__(self, exit_duration_mins: float = 0.0):
        self.exit_duration_mins = exit_duration_mins
        self._started = clock()
        self._code = _NONE
        self._previous: dict[int, object] = {}
        self.reason = ""

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        first = self._code == _NONE
        self._code = max(self._code, _SIGNALS[signum])
        if first:
            # os.write rather than print: a handler may interrupt a print to the same stream.
            name = signal.Signals(signum).name
            os.write(
                2,
                f"[stop] {name} received: the run stops at the next safe point (end of the "
                f"current step or evaluation), saves its state and closes the MLPerf log\n".encode(),
            )

    def elapsed_mins(self) -> float:
        return (clock() - self._started) / 60.0

    def _local_code(self) -> int:
        if self._code:
            return self._code
        if self.exit_duration_mins and self.elapsed_mins() >= self.exit_duration_mins:
            return _DURATION
        return _NONE

    def poll(self, device: torch.device | None = None) -> bool:
        """True when this job should stop now; the same answer on every rank (a collective call)."""
        code = self._local_code()
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flag = torch.tensor([code], dtype=torch.int32, device=device or "cpu")
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            code = int(flag.item())
        if code == _NONE:
            return False
        self.reason = {
            _SIGTERM: "SIGTERM (time limit, preemption or scancel)",
            _SIGUSR1: "SIGUSR1 (the warning before the time limit, SIGNAL_MINUTES)",
            _DURATION: f"EXIT_DURATION_MINS={self.exit_duration_mins:g} reached",
        }[code]
        return True
