"""The benchmark loop on the embedded dataset: log events, hyperparameters, determinism, stopping."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.train import pipeline_seed, run, seed_everything
from tests.helpers import TINY_MODEL, mllog_events, smoke_config

# The keys a compliant run emits, in order, up to run_start (docs/FIDELITY.md, "Log keys").
RUN_START_KEYS = [
    "cache_clear",
    "init_start",
    "submission_benchmark",
    "submission_org",
    "submission_division",
    "submission_status",
    "submission_platform",
    "seed",
    "global_batch_size",
    "gradient_accumulation_steps",
    "max_sequence_length",
    "eval_samples",
    "train_samples",
    "init_checkpoint_step",
    "opt_name",
    "opt_base_learning_rate",
    "opt_adamw_beta_1",
    "opt_adamw_beta_2",
    "opt_adamw_epsilon",
    "opt_adamw_weight_decay",
    "opt_gradient_clip_norm",
    "opt_end_learning_rate",
    "opt_learning_rate_warmup_steps",
    "opt_learning_rate_decay_steps",
    "max_steps",
    "opt_learning_rate_decay_schedule",
    "target_accuracy",
    "init_stop",
    "run_start",
]

# A smaller model than the smoke preset, so each run here takes seconds.
TINY = {
    **TINY_MODEL,
    "LOG_EVERY": "1000",
}


def configure(smoke_data, tmp_path, **extra):
    return smoke_config(smoke_data, tmp_path, {**TINY, **extra})


def test_samples_count_of_every_event_and_hyperparameters(smoke_data, tmp_path):
    # GBS 16, an eval every 32 samples, never reaching the target: three blocks, then aborted.
    cfg = configure(
        smoke_data, tmp_path, GBS=16, MBS=4, EVAL_EVERY=32, EVAL_SAMPLES=8, MAX_TRAIN_SAMPLES=96, TARGET=0.01, SEED=5
    )
    result = run(cfg, log_path=tmp_path / "run.log", echo=False)
    assert result.status == "aborted" and result.samples == 96 and result.steps == 6
    ev = mllog_events(tmp_path / "run.log")
    keys = [e["key"] for e in ev]
    assert keys[: len(RUN_START_KEYS)] == RUN_START_KEYS
    body = [
        (e["key"], e["metadata"].get("samples_count")) for e in ev[len(RUN_START_KEYS) :] if e["key"] != "tracked_stats"
    ]
    expected = []
    for block in range(3):
        start, stop = 32 * block, 32 * (block + 1)
        expected += [
            ("block_start", start),
            ("block_stop", stop),
            ("eval_start", stop),
            ("eval_accuracy", stop),
            ("eval_stop", stop),
        ]
    expected.append(("run_stop", 96))
    assert body == expected
    assert ev[-1]["metadata"]["status"] == "aborted"
    values = {e["key"]: e["value"] for e in ev}
    assert values["submission_benchmark"] == "llama31_8b"
    assert values["seed"] == 5
    assert values["global_batch_size"] == 16
    assert values["gradient_accumulation_steps"] == 4
    assert values["max_sequence_length"] == 64
    assert values["eval_samples"] == 8
    assert values["opt_base_learning_rate"] == cfg.train.lr == 2e-3
    assert values["opt_end_learning_rate"] == pytest.approx(2e-4)
    assert values["opt_learning_rate_warmup_steps"] == 16  # 256 warmup samples / GBS 16
    assert values["opt_learning_rate_decay_steps"] == 2000 - 16
    assert values["max_steps"] == 2000
    assert values["opt_learning_rate_decay_schedule"] == "cosine with linear warmup"
    assert values["target_accuracy"] == 0.01
    assert values["init_checkpoint_step"] == 0
    # train_samples: whole 64-token windows in one pass over en_6 + en_7
    assert values["train_samples"] == sum(
        (int(np.fromfile(p + ".bin", dtype=np.uint16).size) - 1) // 64 for p in smoke_data.train_prefixes
    )
    evals = [e["value"] for e in ev if e["key"] == "eval_accuracy"]
    assert [round(v, 6) for v in evals] == [round(v, 6) for _, v in result.eval_curve]
    assert evals[0] > evals[-1]  # it learns


def test_same_seed_same_run_other_seed_differs(smoke_data, tmp_path):
    def once(seed, name):
        cfg = configure(
            smoke_data,
            tmp_path,
            GBS=16,
            MBS=8,
            EVAL_EVERY=48,
            EVAL_SAMPLES=8,
            MAX_TRAIN_SAMPLES=48,
            TARGET=0.01,
            SEED=seed,
        )
        result = run(cfg, log_path=tmp_path / name, echo=False)
        logged = [
            (e["key"], e["value"], e["metadata"].get("samples_count"))
            for e in mllog_events(tmp_path / name)
            if e["key"] not in ("submission_platform",)
            and e["event_type"] == "POINT_IN_TIME"
            and e["key"] != "tracked_stats"
        ]
        return result.train_losses, result.eval_curve, logged

    a, b, c = once(11, "a.log"), once(11, "b.log"), once(12, "c.log")
    assert a[0] == b[0] and a[1] == b[1] and a[2] == b[2]
    assert len(a[0]) == 3
    assert a[0] != c[0]


def test_seed_is_offset_by_100_per_pipeline_rank(monkeypatch):
    import random

    import torch
    from megatron.core import parallel_state

    monkeypatch.setattr(parallel_state, "model_parallel_is_initialized", lambda: False)
    assert pipeline_seed(1234) == 1234  # outside a parallel run there are no stages
    monkeypatch.setattr(parallel_state, "model_parallel_is_initialized", lambda: True)
    monkeypatch.setattr(parallel_state, "get_pipeline_model_parallel_rank", lambda: 3)
    assert pipeline_seed(1234) == 1534
    seed_everything(1234, torch.device("cpu"))
    assert torch.initial_seed() == 1534
    drawn = (random.random(), float(np.random.random()))
    random.seed(1534)
    np.random.seed(1534)
    assert drawn == (random.random(), float(np.random.random()))
    monkeypatch.setattr(parallel_state, "get_pipeline_model_parallel_rank", lambda: 0)
    seed_everything(1234, torch.device("cpu"))
    assert torch.initial_seed() == 1234


def test_stop_closes_log_aborted_and_crash_too(smoke_data, tmp_path, monkeypatch):
    cfg = configure(smoke_data, tmp_path, EVAL_EVERY=64, EVAL_SAMPLES=8, MAX_TRAIN_SAMPLES=640)
    result = run(cfg, log_path=tmp_path / "stop.log", echo=False, stop_after_steps=2)
    ev = mllog_events(tmp_path / "stop.log")
    assert ev[-1]["key"] == "run_stop" and ev[-1]["metadata"] == {**ev[-1]["metadata"], "status": "aborted"}
    assert result.steps == 2 and ev[-1]["metadata"]["samples_count"] == 32

    # A crash (here: Ctrl-C inside the training step) still ends the log with run_stop aborted.
    from benchmark import engine

    def interrupted(self, micro_batches, lr):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.LocalEngine, "train_step", interrupted)
    cfg = configure(smoke_data, tmp_path, EVAL_EVERY=64, EVAL_SAMPLES=8, MAX_TRAIN_SAMPLES=640)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, log_path=tmp_path / "ctrl_c.log", echo=False)
    last = mllog_events(tmp_path / "ctrl_c.log")[-1]
    assert last["key"] == "run_stop" and last["metadata"]["status"] == "aborted"
    assert last["metadata"]["samples_count"] == 0


def test_non_finite_loss_stops_aborted(smoke_data, tmp_path):
    # A learning rate this large blows the weights up within a few steps.
    cfg = configure(
        smoke_data, tmp_path, LR=1e6, WARMUP_SAMPLES=0, EVAL_EVERY=160, EVAL_SAMPLES=8, MAX_TRAIN_SAMPLES=1600
    )
    result = run(cfg, log_path=tmp_path / "nan.log", echo=False)
    assert result.status == "aborted"
    assert result.reason.startswith(f"non-finite training values at step {result.steps + 1}")
    assert mllog_events(tmp_path / "nan.log")[-1]["metadata"]["status"] == "aborted"


def test_smoke_data_follows_the_benchmark_area(smoke_data):
    """The embedded set holds en_6 and en_7: the run takes the ones BENCHMARK_AREA names."""
    from benchmark.config import ConfigError, build_config
    from benchmark.train import resolve_smoke_data

    env = {"SMOKE_DATA_DIR": str(smoke_data.data_dir.parent)}
    both = build_config(env=env, preset="smoke")
    resolve_smoke_data(both)
    assert both.data.train_files == ["c4-train.en_6_text_document", "c4-train.en_7_text_document"]
    assert both.data.data_dir == str(smoke_data.data_dir)
    en6 = build_config(env={**env, "BENCHMARK_AREA": "en6"}, preset="smoke")
    resolve_smoke_data(en6)
    assert en6.data.train_files == ["c4-train.en_6_text_document"]
    other = build_config(env=env, preset="smoke")
    other.data.train_files = ["c4-train.en_3_text_document"]
    with pytest.raises(ConfigError, match="embedded smoke data set has no c4-train.en_3_text_document"):
        resolve_smoke_data(other)


def test_two_files_are_repeated_for_a_run_longer_than_one_pass(smoke_data, tmp_path):
    # Megatron-Core blends unweighted files as one pass over each; the project weights them by size
    # so a run may read more sequences than the area holds, as it may with one file.
    from benchmark.data import build_train_dataset, load_tokenizer_info, one_epoch_sequences

    cfg = configure(smoke_data, tmp_path, BENCHMARK_AREA="en6+en7")
    prefixes = [f"{cfg.data.data_dir}/{name}" for name in cfg.data.train_files]
    assert len(prefixes) == 2
    one_pass = one_epoch_sequences(prefixes, 64)
    tok = load_tokenizer_info(cfg.data.tokenizer)
    from benchmark.train import distributed

    with distributed(cfg):
        ds = build_train_dataset(
            prefixes, seq_length=64, num_samples=3 * one_pass, seed=1, tokenizer=tok, cache_dir=str(tmp_path / "cache")
        )
        assert len(ds) == 3 * one_pass
        last = ds[3 * one_pass - 1]
    assert last["tokens"].shape == (64,)
    # each file contributes in proportion to its size
    shares = np.bincount(np.asarray(ds.dataset_index), minlength=2) / len(ds)
    sizes = np.array([one_epoch_sequences([p], 64) for p in prefixes]) / one_pass
    assert np.allclose(shares, sizes, atol=0.01)


def test_no_attention_kernel_for_the_shape_is_a_clear_error(smoke_data, tmp_path, monkeypatch):
    """TE decides at the first step whether a kernel takes the shape (FP8 attention has none at small
    head sizes): the run ends with the knob to change, as a ConfigError, and a closed log."""
    from benchmark import engine
    from benchmark.config import ConfigError
    from benchmark.train import NO_ATTENTION_KERNEL, no_attention_kernel

    def no_kernel(self, micro_batches, lr):
        raise ValueError(f"{NO_ATTENTION_KERNEL} for the provided inputs. Please run with NVTE_DEBUG=1")

    monkeypatch.setattr(engine.LocalEngine, "train_step", no_kernel)
    cfg = configure(smoke_data, tmp_path, EVAL_EVERY=64, EVAL_SAMPLES=8, MAX_TRAIN_SAMPLES=640)
    head, seq = cfg.model.hidden_size // cfg.model.num_attention_heads, cfg.model.seq_length
    shape = rf"no attention kernel for this shape \(head size {head}, sequence {seq}\): set LAYER_SPEC=local"
    with pytest.raises(ConfigError, match=shape):
        run(cfg, log_path=tmp_path / "kernel.log", echo=False)
    last = mllog_events(tmp_path / "kernel.log")[-1]
    assert last["key"] == "run_stop" and last["metadata"]["status"] == "aborted"
    cfg.parallel.fp8, cfg.parallel.fp8_attention = True, True
    assert "set FP8_ATTENTION=0, or use a head size of 128" in no_attention_kernel(cfg)

    # Any other ValueError stays a crash with its traceback.
    def other(self, micro_batches, lr):
        raise ValueError("something else")

    monkeypatch.setattr(engine.LocalEngine, "train_step", other)
    with pytest.raises(ValueError, match="something else"):
        run(configure(smoke_data, tmp_path, EVAL_SAMPLES=8), log_path=tmp_path / "other.log", echo=False)
