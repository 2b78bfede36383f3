"""EVAL_SET: the windows every evaluation reads, against a GPTDataset built here as NeMo builds it.

The reference side is written out in this file (NeMo's PreTrainingDataModule.build() formula and
GPTDataset constructed directly from Megatron-Core, with its own index cache), not through the
project's functions, so that a change to either side shows.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from benchmark.checkpoint import Position
from benchmark.config import ConfigError, build_config
from benchmark.data import TokenizerInfo
from benchmark.indexed import IndexedWriter
from benchmark.mlperf_log import MLPerfLog
from benchmark.train import DataShard, RunContext, _train_loop, build_valid_dataset, main

VOCAB = 512
SEQ = 32
MAX_STEPS = 40
STEPS_PER_EVAL = 4
EVALS = 3
VALID = "c4-validation-91205-samples.en_text_document"
TOK = TokenizerInfo(vocab_size=VOCAB, eod=0, path="synthetic")


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory):
    """A validation file of 120 documents of uneven length (about 24k tokens, ~750 windows of 32)."""
    folder = tmp_path_factory.mktemp("valid")
    rng = np.random.default_rng(5)
    lengths = rng.integers(20, 380, size=120)
    tokens = rng.integers(1, VOCAB, size=int(lengths.sum()), dtype=np.int64)
    writer = IndexedWriter(folder / f"{VALID}.bin", np.uint16)
    writer.add(tokens, lengths)
    writer.finalize(folder / f"{VALID}.idx")
    return folder, tokens


def _config(gbs: int, seed: int, eval_set: str = "reference", eval_samples: int = 1024):
    return build_config(
        env={
            "PRESET": "smoke",
            "DEVICE": "cpu",
            "SEQ_LENGTH": str(SEQ),
            "GBS": str(gbs),
            "MBS": "8",
            "MAX_STEPS": str(MAX_STEPS),
            "EVAL_EVERY": str(STEPS_PER_EVAL * gbs),
            "EVAL_SAMPLES": str(eval_samples),
            "MAX_TRAIN_SAMPLES": str(EVALS * STEPS_PER_EVAL * gbs),
            "WARMUP_SAMPLES": "0",
            "SEED": str(seed),
            "EVAL_SET": eval_set,
        }
    )


class _RecordingEngine:
    """Stands in for the model: records the windows each evaluation is given, never reaches TARGET."""

    device = "cpu"

    def __init__(self):
        self.evals: list[list[torch.Tensor]] = []

    def train_step(self, micro, lr):
        return 5.0, 1.0

    def evaluate(self, batches):
        self.evals.append([row for batch in batches for row in batch["tokens"]])
        return 9.0


class _Zeros:
    def __getitem__(self, i):
        return {"tokens": torch.zeros(SEQ, dtype=torch.long), "labels": torch.zeros(SEQ, dtype=torch.long)}


def _evaluated(cfg, valid_ds, dp: int) -> list[list[np.ndarray]]:
    """Run the training loop once per data-parallel rank; per evaluation, the ranks' shares concatenated."""
    per_rank = []
    for rank in range(dp):
        engine = _RecordingEngine()
        ctx = RunContext(
            train_ds=_Zeros(),
            valid_ds=valid_ds,
            shard=DataShard(rank, dp),
            world_size=dp,
            vocab=VOCAB,
            log=MLPerfLog(None, echo=False),
        )
        status = _train_loop(cfg, engine, ctx, Position()).status
        assert status == "aborted" and len(engine.evals) == EVALS
        per_rank.append(engine.evals)
    return [[w.numpy() for rank in range(dp) for w in per_rank[rank][e]] for e in range(EVALS)]


def _project_valid(cfg, folder, tmp_path):
    cfg.data.valid_file = VALID
    return build_valid_dataset(cfg, folder, TOK, str(tmp_path / "project_cache"))


def _reference_windows(prefix: str, seed: int, gbs: int, cache: str) -> list[np.ndarray]:
    """NeMo: num_val_samples = (max_steps // val_check_interval + 1) * limit_val_batches * GBS over the
    whole validation file (paths={"validation": [file]}), read from index 0 at each evaluation."""
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.utils import Split

    val_check_interval = (STEPS_PER_EVAL * gbs) // gbs
    limit_val_batches = math.ceil(1024 / gbs)
    num_samples = (MAX_STEPS // val_check_interval + 1) * limit_val_batches * gbs
    config = GPTDatasetConfig(
        random_seed=seed,
        sequence_length=SEQ,
        blend_per_split=[None, ([prefix], None), None],
        path_to_cache=cache,
        tokenizer=TOK,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
        mmap_bin_files=True,
        add_extra_token_to_sequence=True,
    )
    low = GPTDataset.build_low_level_dataset(prefix, config)
    documents = np.arange(GPTDataset.numel_low_level_dataset(low), dtype=np.int32)
    ds = GPTDataset(low, prefix, documents, num_samples, Split.valid, config)
    assert len(ds) >= num_samples
    return [ds[i]["tokens"].numpy() for i in range(limit_val_batches * gbs)]


@pytest.mark.parametrize("gbs", [16, 96])
@pytest.mark.parametrize("seed", [1234, 77])
def test_reference_eval_set_is_nemos_every_eval_and_across_dp(valid_file, tmp_path, gbs, seed):
    folder, _ = valid_file
    want = _reference_windows(str(folder / VALID), seed, gbs, str(tmp_path / "reference_cache"))
    assert len(want) == {16: 1024, 96: 1056}[gbs]
    cfg = _config(gbs, seed)
    valid_ds = _project_valid(cfg, folder, tmp_path)
    for dp in (1, 2):
        for windows in _evaluated(cfg, valid_ds, dp):
            assert len(windows) == len(want)
            assert all(np.array_equal(a, b) for a, b in zip(windows, want, strict=True))
    # and the set is not the file in order: the seed shuffles it
    first = np.concatenate([w for w in want[:4]])
    assert not np.array_equal(first, valid_file[1][: first.size])


def test_seeds_give_different_eval_sets(valid_file, tmp_path):
    folder, _ = valid_file
    a = _project_valid(_config(16, 1234), folder, tmp_path)
    b = _project_valid(_config(16, 77), folder, tmp_path)
    assert not all(np.array_equal(a[i]["tokens"], b[i]["tokens"]) for i in range(16))


def test_file_order_evaluates_the_first_windows_in_order(valid_file, tmp_path):
    folder, tokens = valid_file
    cfg = _config(16, 1234, eval_set="file-order", eval_samples=40)
    valid_ds = _project_valid(cfg, folder, tmp_path)
    want = [tokens[i * SEQ : (i + 1) * SEQ] for i in range(40)]
    for dp in (1, 2):
        for windows in _evaluated(cfg, valid_ds, dp):
            assert len(windows) == 40
            assert all(np.array_equal(a, b) for a, b in zip(windows, want, strict=True))


def test_reference_index_is_cached_and_reopened(valid_file, tmp_path):
    folder, _ = valid_file
    cfg = _config(96, 1234)
    first = _project_valid(cfg, folder, tmp_path)
    files = sorted((tmp_path / "project_cache").rglob("*.npy"))
    assert len(files) == 3  # document, sample and shuffle indices
    stamps = [os.stat(f).st_mtime_ns for f in files]
    again = _project_valid(cfg, folder, tmp_path)
    assert sorted((tmp_path / "project_cache").rglob("*.npy")) == files
    assert [os.stat(f).st_mtime_ns for f in files] == stamps
    assert np.array_equal(first[5]["tokens"], again[5]["tokens"])


def test_reference_sizes_and_rounding_follow_nemo(tmp_path):
    for name in ("c4-train.en_6_text_document", "c4-train.en_7_text_document", VALID):
        (tmp_path / f"{name}.idx").write_bytes(b"")
    paths = {"PREPROCESSED_PATH": str(tmp_path), "TOKENIZER_PATH": str(tmp_path)}

    def build(env):
        return build_config(env={**paths, **env})

    t16 = build(env={"PRESET": "llama31_8b"}).train
    assert t16.eval_set == "reference"
    assert (t16.eval_interval_steps, t16.eval_batches, t16.eval_sequences) == (768, 64, 1024)
    assert t16.eval_dataset_samples == 1_600_512  # (1,200,000 // 768 + 1) * 64 * 16
    t96 = build(env={"PRESET": "llama31_8b", "GBS": "96"}).train
    assert (t96.eval_interval_steps, t96.eval_batches, t96.eval_sequences) == (128, 11, 1056)
    assert t96.eval_dataset_samples == (1_200_000 // 128 + 1) * 11 * 96 == 9_901_056
    assert t96.warmup_steps == 170  # 16,348 warmup samples // 96, as the reference launcher floors it
    assert t96.eval_samples == 1024  # what the MLPerf log's eval_samples says
    t96_file = build(env={"PRESET": "llama31_8b", "GBS": "96", "EVAL_SET": "file-order"}).train
    assert t96_file.eval_sequences == 1024


def test_eval_samples_need_not_split_over_replicas_under_reference():
    # 1,024 over MBS 8 x DP 1 splits; 100 does not, which only file order refuses
    assert build_config(env={"PRESET": "smoke", "DEVICE": "cpu", "EVAL_SAMPLES": "100"}).train.eval_sequences == 112
    with pytest.raises(ConfigError, match="EVAL_SAMPLES=100 .*EVAL_SET=file-order"):
        build_config(env={"PRESET": "smoke", "DEVICE": "cpu", "EVAL_SAMPLES": "100", "EVAL_SET": "file-order"})


def test_unknown_eval_set_is_refused_by_name(capsys, monkeypatch):
    with pytest.raises(ConfigError, match="EVAL_SET='shuffled' must be one of reference, file-order"):
        build_config(env={"PRESET": "smoke", "EVAL_SET": "shuffled"})
    monkeypatch.setenv("EVAL_SET", "shuffled")
    assert main(["--print-config"]) == 2
    err = capsys.readouterr().err
    assert "EVAL_SET='shuffled'" in err and "Traceback" not in err
