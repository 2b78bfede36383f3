"""A profiler window inside the real training loop (PROFILE_STEPS), and NVTX ranges for nsys.

PROFILE_STEPS=START:END runs torch.profiler from the beginning of step START to the end of step
END-1 (steps count from 1, as the progress line prints them) on the ranks PROFILE_RANKS names, and
writes into PROFILE_DIR:

- ``<run>_rank<R>_steps<START>-<END>.chrome_trace.json``: open in chrome://tracing or ui.perfetto.dev;
- ``tensorboard/<run>_rank<R>.<ms>.pt.trace.json``: the same trace where TensorBoard's profiler
  plugin looks for it (``tensorboard --logdir PROFILE_DIR/tensorboard``);
- with PROFILE_MEMORY=1 (GPU), ``<run>_rank<R>_steps<START>-<END>.memory_snapshot.pickle``: every
  CUDA allocation over the window, for pytorch.org/memory_viz.

The NVTX ranges (train_step, forward_backward, optimizer, eval) are pushed whenever CUDA is
available, whether or not a window is set, so that an ``nsys profile`` of any run shows them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import torch

from benchmark.config import Config, ConfigError, parse_profile_ranks, parse_profile_steps


@contextlib.contextmanager
def nvtx_range(name: str):
    """An NVTX range around a block when CUDA is available (a no-op on CPU)."""
    if not torch.cuda.is_available():
        yield
        return
    torch.cuda.nvtx.range_push(name)
    try:
        yield
    finally:
        torch.cuda.nvtx.range_pop()


def profile_dir(cfg: Config) -> Path:
    return Path(cfg.log.profile_dir or Path(cfg.log.output_dir) / "profile")


def _replace_atomically(write, path: Path) -> None:
    """Write through ``write(tmp_path)`` and rename, so that a half-written trace is never left."""
    tmp = path.with_name(path.name + ".tmp")
    write(str(tmp))
    os.replace(tmp, path)


class ProfileWindow:
    """torch.profiler over the steps PROFILE_STEPS names, on this rank if PROFILE_RANKS names it."""

    def __init__(self, cfg: Config, rank: int, world_size: int, device: torch.device):
        lg = cfg.log
        self.steps = parse_profile_steps(lg.profile_steps)
        ranks = parse_profile_ranks(lg.profile_ranks)
        if self.steps is not None and ranks is not None and max(ranks) >= world_size:
            raise ConfigError(
                f"PROFILE_RANKS={lg.profile_ranks} names rank {max(ranks)}, but the run has {world_size} "
                f"process(es), ranks 0 to {world_size - 1}: name ranks below {world_size}, or all"
            )
        self.enabled = self.steps is not None and (ranks is None or rank in ranks)
        self.memory = lg.profile_memory and device.type == "cuda"
        self.rank = rank
        self.device = device
        self.dir = profile_dir(cfg)
        self.name = f"{cfg.preset}_seed{cfg.train.seed}_rank{rank}"
        self._prof = None
        self._step_mark = None
        self._first = 0
        self.written: list[Path] = []

    def before_step(self, step: int) -> None:
        """Start the window before step ``step`` (counted from 1) when it falls inside it.

        A job resumed inside the window profiles the rest of it; one resumed after it, nothing.
        """
        if self._prof is not None:
            self._mark_step(step)
            return
        if not self.enabled or self.written:
            return
        start, end = self.steps
        if not start <= step < end:
            return
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        if self.memory:
            torch.cuda.memory._record_memory_history(max_entries=1_000_000)
        self._prof = torch.profiler.profile(activities=activities, record_shapes=True)
        self._prof.start()
        self._first = step
        self._mark_step(step)

    def _mark_step(self, step: int) -> None:
        # ProfilerStep#N is the name TensorBoard's profiler plugin splits steps by; torch.profiler's own
        # markers need a schedule, and here N is the loop's step number rather than a count from 0.
        self._step_mark = torch.profiler.record_function(f"ProfilerStep#{step}")
        self._step_mark.__enter__()

    def _end_step_mark(self) -> None:
        if self._step_mark is not None:
            self._step_mark.__exit__(None, None, None)
            self._step_mark = None

    def after_step(self, step: int) -> None:
        """Mark the step's end in the trace; after step END-1, stop and write the files."""
        if self._prof is None:
            return
        self._end_step_mark()
        if step >= self.steps[1] - 1:
            self._finish(step)

    def close(self) -> None:
        """On a way out inside the window (early stop, abort, exception): write what was recorded."""
        if self._prof is not None:
            self._finish(None)

    def _finish(self, last_step: int | None) -> None:
        self._end_step_mark()
        prof, self._prof = self._prof, None
        prof.stop()
        self.dir.mkdir(parents=True, exist_ok=True)
        # The steps recorded; a window cut short by the end of the run says where it ended.
        span = f"steps{self._first}-{self.steps[1]}" if last_step is not None else f"steps{self._first}-cut"
        trace = self.dir / f"{self.name}_{span}.chrome_trace.json"
        _replace_atomically(prof.export_chrome_trace, trace)
        self.written.append(trace)
        # TensorBoard's profiler plugin reads <worker>.<time>.pt.trace.json files from the log folder.
        tb = self.dir / "tensorboard" / f"{self.name}.{int(time.time() * 1000)}.pt.trace.json"
        tb.parent.mkdir(parents=True, exist_ok=True)
        _replace_atomically(lambda tmp: shutil.copyfile(trace, tmp), tb)
        self.written.append(tb)
        if self.memory:
            snapshot = self.dir / f"{self.name}_{span}.memory_snapshot.pickle"
            _replace_atomically(torch.cuda.memory._dump_snapshot, snapshot)
            torch.cuda.memory._record_memory_history(enabled=None)
            self.written.append(snapshot)
        print(f"[profile] rank {self.rank}: wrote {', '.join(str(p) for p in self.written)}", flush=True)


class NoProfile:
    """A window that never opens: for a loop driven without a configured run (tests)."""

    def before_step(self, step: int) -> None:
        pass

    def after_step(self, step: int) -> None:
        pass

    def close(self) -> None:
        pass
