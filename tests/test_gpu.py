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
    first = run(
        configure(smoke_data, tmp_path, CHECKPOINT_DIR=ckpt, JOB_SAMPLES=256, **small),
        log_path=tmp_path / "p1.log",
        echo=False,
    )
    second = run(
        configure(smoke_data, tmp_path, CHECKPOINT_DIR=ckpt, **small), log_path=tmp_path / "p2.log", echo=False
    )
    assert first.samples == 256 and second.samples == 768
    resumed = first.train_losses + second.train_losses
    assert len(resumed) == len(whole.train_losses) == 48
    # The resumed run repeats the uninterrupted one exactly (measured on an H200: bit for bit).
    assert resumed == whole.train_losses
    assert [s for s, _ in second.eval_curve] == [256, 512, 768]
    assert second.eval_curve == whole.eval_curve


def test_early_stop_mid_block_and_resume_on_gpu(smoke_data, tmp_path, monkeypatch):
    """EXIT_DURATION_MINS (a clock of one second per reading) stops the run after 5 steps, mid-block;
    the distributed optimizer's checkpoint then resumes to the uninterrupted run's losses."""
    from benchmark import preempt

    small = dict(EVAL_EVERY=128, MAX_TRAIN_SAMPLES=256, TARGET=0.01, EVAL_SAMPLES=64)
    whole = run(configure(smoke_data, tmp_path, **small), log_path=tmp_path / "w.log", echo=False)
    ticks = iter(range(1000))
    monkeypatch.setattr(preempt, "clock", lambda: float(next(ticks)))
    ckpt = tmp_path / "ckpt"
    first = run(
        configure(smoke_data, tmp_path, CHECKPOINT_DIR=ckpt, EXIT_DURATION_MINS=0.1, **small),
        log_path=tmp_path / "p1.log",
        echo=False,
    )
    monkeypatch.setattr(preempt, "clock", preempt.time.monotonic)
    assert (first.stopped, first.steps, first.checkpoint) == (True, 5, str(ckpt / "iter_0000005"))
    second = run(
        configure(smoke_data, tmp_path, CHECKPOINT_DIR=ckpt, **small), log_path=tmp_path / "p2.log", echo=False
    )
    assert first.train_losses + second.train_losses == whole.train_losses
    assert second.eval_curve == whole.eval_curve and [s for s, _ in whole.eval_curve] == [128, 256]


def test_wgrad_accumulation_into_fp32_main_grad():
    """benchmark.wgrad's kernel adds grad_output^T @ input to an fp32 buffer in place, as Apex's does."""
    from benchmark import wgrad

    assert wgrad.available()
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(512, 256, device="cuda", generator=g).bfloat16()
    dy = torch.randn(512, 384, device="cuda", generator=g).bfloat16()
    main_grad = torch.randn(384, 256, device="cuda", generator=g)
    expected = main_grad.double() + dy.double().t() @ x.double()
    pointer = main_grad.data_ptr()
    wgrad.wgrad_gemm_accum_fp32(x, dy, main_grad)
    assert main_grad.data_ptr() == pointer and main_grad.dtype == torch.float32
    # fp32 accumulation of exact bf16 products: far tighter than a bf16 result (2^-9 relative).
    torch.testing.assert_close(main_grad.double(), expected, rtol=1e-5, atol=1e-4)


def test_watching_a_gpu_run_profiles_kernels_and_memory(smoke_data, tmp_path):
    """The profiler window and the memory snapshot inside the real loop on a GPU, and the GPU-only
    scalars (MFU, peak memory) where tensorboard is installed."""
    import importlib.util
    import json
    import pickle

    tb = importlib.util.find_spec("tensorboard") is not None
    extra = {"TENSORBOARD_DIR": tmp_path / "tb"} if tb else {}
    cfg = configure(
        smoke_data,
        tmp_path,
        EVAL_EVERY=256,
        MAX_TRAIN_SAMPLES=256,
        TARGET=0.01,
        EVAL_SAMPLES=64,
        PROFILE_STEPS="3:5",
        PROFILE_MEMORY=1,
        SEED=9,
        **extra,
    )
    result = run(cfg, log_path=tmp_path / "run.log", echo=False)
    assert result.steps == 16
    folder = tmp_path / "profile"
    (trace,) = folder.glob("*.chrome_trace.json")
    events = json.loads(trace.read_text())["traceEvents"]
    assert sorted({e["name"] for e in events if e.get("name", "").startswith("ProfilerStep#")}) == [
        "ProfilerStep#3",
        "ProfilerStep#4",
    ]
    kernels = [e for e in events if e.get("cat") == "kernel"]
    assert len(kernels) > 20  # the GPU's own kernels, not only the CPU-side ops
    (snapshot,) = folder.glob("*.memory_snapshot.pickle")
    with open(snapshot, "rb") as f:
        memory = pickle.load(f)
    assert memory["segments"] and any(memory["device_traces"])
    if tb:
        from tests.test_watch import tb_scalars

        scalars = tb_scalars(tmp_path / "tb" / "smoke_seed9")
        mfu = [v for _, v in scalars["train/mfu"]]
        mem = [v for _, v in scalars["train/max_memory_allocated_gib"]]
        assert len(mfu) == len(mem) == 16
        assert all(0 < v < 1 for v in mfu) and all(v > 0 for v in mem)
    print(
        f"[watch] {len(kernels)} kernels in the window, snapshot segments {len(memory['segments'])}, "
        f"tensorboard {'checked' if tb else 'not installed here'}"
    )
