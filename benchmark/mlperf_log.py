"""The MLPerf log, written with ``mlperf_logging.mllog`` (key order: docs/FIDELITY.md, tests/test_train.py).

Each run gets its own MLLogger and file handler (not the package's shared logger), so several runs in
one process, as in the tests, never write into each other's files. Only rank 0 writes.

A log has one writer: opening it takes a non-blocking exclusive lock on ``<log>.lock`` beside it, which
records the writer's pid, host and start time, and a second process opening the same log while the
first lives gets ``LogInUse`` (naming that process) before anything is truncated.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from mlperf_logging.mllog import constants as C
from mlperf_logging.mllog.mllog import MLLogger

from benchmark.config import REPO_ROOT, Config, ConfigError

BENCHMARK = C.LLAMA31_8B  # "llama31_8b"
DECAY_SCHEDULE = "cosine with linear warmup"
# Keys the benchmark logs that mllog.constants does not define.
TARGET_ACCURACY = "target_accuracy"
TRACKED_STATS = "tracked_stats"


class LogInUse(ConfigError):
    """The MLPerf log is being written by another live process (it holds the log's lock file)."""


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _take_lock(path: Path) -> int | None:
    """Lock ``<path>.lock`` for this process; the descriptor, or None where the file system has no flock.

    The lock file is removed when the log closes, so a later opener may find the file it opened already
    unlinked by the holder it waited on: it then tries again on the file now at that path.
    """
    lock = lock_path(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "a process that is starting"
            os.close(fd)
            raise LogInUse(
                f"{path} is being written by another run ({holder}; lock {lock}): two trainings must not write "
                "one MLPerf log. Give this run its own log (--log-file, or another RESULT_DIR/JOB_DIR or seed), "
                "or wait for that run to end or stop it"
            ) from None
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                # Some shared file systems (Lustre mounted without flock) cannot lock: write unguarded.
                print(
                    f"[mlperf log] warning: cannot lock {lock} ({err.strerror}); the log is not "
                    "guarded against a second writer",
                    file=sys.stderr,
                    flush=True,
                )
                return None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    record = f"pid {os.getpid()} on host {socket.gethostname()}, started {started}\n".encode()
    # Written in place, not renamed into place: the lock lives on this file's inode.
    os.ftruncate(fd, 0)
    os.pwrite(fd, record, 0)
    return fd


class MLPerfLog:
    """Thin wrapper: an MLLogger writing ``:::MLLOG`` lines to one file (and nothing when disabled)."""

    def __init__(self, path: Path | None, *, echo: bool = True):
        self.path = path
        self._logger = None
        self._handlers: list[logging.Handler] = []
        self._lock_fd: int | None = None
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # Locked before the log is opened for writing, which truncates it.
        self._lock_fd = _take_lock(path)
        logger = logging.getLogger(f"mlperf.{path.resolve()}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        try:
            file_handler = logging.FileHandler(path, mode="w", encoding="utf-8")
        except BaseException:
            self._release()
            raise
        self._handlers.append(file_handler)
        if echo:
            self._handlers.append(logging.StreamHandler())
        for handler in self._handlers:
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
        # stack offset 2: the file/line in the metadata is the caller of event/start/end below.
        self._logger = MLLogger(logger=logger, default_stack_offset=2, root_dir=str(REPO_ROOT))

    def event(self, key: str, value: Any = None, **metadata: Any) -> None:
        if self._logger:
            self._logger.event(key=key, value=value, metadata=metadata or None)

    def start(self, key: str, value: Any = None, **metadata: Any) -> None:
        if self._logger:
            self._logger.start(key=key, value=value, metadata=metadata or None)

    def end(self, key: str, value: Any = None, **metadata: Any) -> None:
        if self._logger:
            self._logger.end(key=key, value=value, metadata=metadata or None)

    def close(self) -> None:
        for handler in self._handlers:
            handler.flush()
            handler.close()
            if self._logger:
                self._logger.logger.removeHandler(handler)
        self._handlers = []
        self._release()

    def _release(self) -> None:
        if self._lock_fd is not None and self.path is not None:
            # Removed while still held, so that nobody locks a file that is about to disappear.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path(self.path))
            os.close(self._lock_fd)
            self._lock_fd = None

    def submission_and_hyperparameters(
        self, cfg: Config, *, platform: str, grad_accum: int, train_samples: int, init_checkpoint_step: int
    ) -> None:
        """The keys from submission_benchmark to target_accuracy, in order, from the config that runs."""
        t = cfg.train
        self.event(C.SUBMISSION_BENCHMARK, BENCHMARK)
        self.event(C.SUBMISSION_ORG, cfg.log.submission_org)
        self.event(C.SUBMISSION_DIVISION, cfg.log.submission_division)
        self.event(C.SUBMISSION_STATUS, cfg.log.submission_status)
        self.event(C.SUBMISSION_PLATFORM, platform)
        self.event(C.SEED, t.seed)
        self.event(C.GLOBAL_BATCH_SIZE, t.global_batch_size)
        self.event(C.GRADIENT_ACCUMULATION_STEPS, grad_accum)
        self.event(C.MAX_SEQUENCE_LENGTH, cfg.model.seq_length)
        self.event(C.EVAL_SAMPLES, t.eval_samples)
        self.event(C.TRAIN_SAMPLES, train_samples)
        self.event(C.INIT_CHECKPOINT_STEP, init_checkpoint_step)
        self.event(C.OPT_NAME, "adamw")
        self.event(C.OPT_BASE_LR, t.lr)
        self.event(C.OPT_ADAMW_BETA_1, t.adam_beta1)
        self.event(C.OPT_ADAMW_BETA_2, t.adam_beta2)
        self.event(C.OPT_ADAMW_EPSILON, t.adam_eps)
        self.event(C.OPT_ADAMW_WEIGHT_DECAY, t.weight_decay)
        self.event(C.OPT_GRADIENT_CLIP_NORM, t.clip_grad)
        self.event(C.OPT_END_LR, t.min_lr)
        self.event(C.OPT_LR_WARMUP_STEPS, t.warmup_steps)
        self.event(C.OPT_LR_DECAY_STEPS, t.decay_steps)
        self.event(C.MAX_STEPS, t.max_steps)
        self.event(C.OPT_LR_DECAY_SCHEDULE, DECAY_SCHEDULE)
        self.event(TARGET_ACCURACY, t.target)
