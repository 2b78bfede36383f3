"""The MLPerf log, written with ``mlperf_logging.mllog`` (key order: docs/FIDELITY.md, tests/test_train.py).

Each run gets its own MLLogger and file handler (not the package's shared logger), so several runs in
one process, as in the tests, never write into each other's files. Only rank 0 writes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mlperf_logging.mllog import constants as C
from mlperf_logging.mllog.mllog import MLLogger

from benchmark.config import REPO_ROOT, Config

BENCHMARK = C.LLAMA31_8B  # "llama31_8b"
DECAY_SCHEDULE = "cosine with linear warmup"
# Keys the benchmark logs that mllog.constants does not define.
TARGET_ACCURACY = "target_accuracy"
TRACKED_STATS = "tracked_stats"


class MLPerfLog:
    """Thin wrapper: an MLLogger writing ``:::MLLOG`` lines to one file (and nothing when disabled)."""

    def __init__(self, path: Path | None, *, echo: bool = True):
        self.path = path
        self._logger = None
        self._handlers: list[logging.Handler] = []
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        logger = logging.getLogger(f"mlperf.{path.resolve()}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        file_handler = logging.FileHandler(path, mode="w", encoding="utf-8")
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
