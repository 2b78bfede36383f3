"""The GPU path (MegatronEngine: DDP + distributed optimizer, bf16) on the embedded dataset.

Runs where CUDA is present (the device machine); skipped elsewhere with that reason. The CPU tests
cover the same loop; these check the GPU engine, its bf16 training and its dist-checkpoint resume.
"""

from __future__ import annotations

import pytest
import torch

from benchmark.train import run
from tests.helpers import smoke_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on the GPU machine)"),
]


def configure(smoke_data, tmp_path, **extra):
    return smoke_config(smoke_data, tmp_path, {"DEVICE": "cuda", **extra})


def test_smoke_reaches_target_on_gpu(smoke_data, tmp_path):
    from compliance.check import check_log

    result = run(configure(smoke_data, tmp_path), log_path=tmp_path / "gpu.log", echo=False)
    assert result.status == "success", result.reason
    assert len(result.eval_curve) >= 2
    report = check_log(tmp_path / "gpu.log", profile="smoke")
    assert report.passed, report.format()


def test_pause_and_resume_on_gpu(smoke_data, tmp_path):
    small = dict(EVAL_EVERY=256, MAX_TRAIN_SAMPLES=768, TARGET=0.01, EVAL_SAMPLES=64)
    whole = run(configure(smoke_data, tmp_path, **small), log_path=tmp_path / "w.log", echo=False)
    ckpt = tmp_path / "ckpt"
    first = run(configure(smoke_data, tmp_path, CHECKPOINT_DIR=ckpt, JOB_SAMPLES=256, **small),
                log_path=tmp_path / "p1.log", echo=False)
    second = run(configure(smoke_data, tmp_path, CHECKPOINT_DIR=ckpt, **small),
                 log_path=tmp_path / "p2.log", echo=False)
    assert first.samples == 256 and second.samples == 768
    resumed = first.train_losses + second.train_losses
    assert len(resumed) == len(whole.train_losses) == 48
    # The resumed run repeats the uninterrupted one exactly (measured on an H200: bit for bit).
    assert resumed == whole.train_losses
    assert [s for s, _ in second.eval_curve] == [256, 512, 768]
    assert second.eval_curve == whole.eval_curve
