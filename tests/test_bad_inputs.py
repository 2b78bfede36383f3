"""Bad tokenizers and data files are named before init_stop, with the fix (benchmark.data.check_inputs).

Each case works on a copy of the embedded smoke data set in tmp_path, damaged one way. The in-process
cases assert the ConfigError's text and that the MLPerf log, already opened with init_start, ends
with an aborted run_stop that carries the reason and no run_start; the subprocess cases assert
`python -m benchmark.train`'s exit status 2 and that no traceback reaches the user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark.config import ConfigError
from benchmark.indexed import IndexedWriter
from benchmark.train import run
from tests.helpers import mllog_events, smoke_config

REPO = Path(__file__).resolve().parents[1]
EN6 = "c4-train.en_6_text_document"


@pytest.fixture
def data(smoke_data, tmp_path):
    """A private copy of the smoke data set: (preprocessed folder, tokenizer folder, validation name)."""
    folder = tmp_path / "data"
    folder.mkdir()
    for p in Path(smoke_data.data_dir).iterdir():
        if p.is_file():
            shutil.copy(p, folder / p.name)
    tok = tmp_path / "tokenizer"
    shutil.copytree(smoke_data.tokenizer_dir, tok)
    return folder, tok, Path(smoke_data.valid_prefix).name


def _run_expecting_error(data, tmp_path, env: dict | None = None) -> tuple[str, list[dict]]:
    folder, tok, _ = data
    full = {"PREPROCESSED_PATH": folder, "TOKENIZER_PATH": tok, "BENCHMARK_AREA": "en6", **(env or {})}
    cfg = smoke_config(_SmokeShim(folder, tok), tmp_path / "results", full)
    log = tmp_path / "results" / "mlperf.log"
    with pytest.raises(ConfigError) as err:
        run(cfg, log_path=log, echo=False)
    return str(err.value), mllog_events(log)


class _SmokeShim:
    """smoke_config reads data_dir and tokenizer_dir of its first argument: point them at the copy."""

    def __init__(self, folder, tok):
        self.data_dir, self.tokenizer_dir = folder, tok


def _assert_aborted_with(events: list[dict], reason: str) -> None:
    keys = [e["key"] for e in events]
    assert keys[:2] == ["cache_clear", "init_start"]
    assert "run_start" not in keys and "init_stop" not in keys
    stop = events[-1]
    assert stop["key"] == "run_stop"
    assert stop["metadata"]["status"] == "aborted"
    assert stop["metadata"]["reason"] == reason


def _write(prefix: Path, lengths, tokens, dtype=np.uint16) -> None:
    writer = IndexedWriter(f"{prefix}.bin", dtype)
    writer.add(np.asarray(tokens, dtype=np.int64), np.asarray(lengths, dtype=np.int64))
    writer.finalize(f"{prefix}.idx")


def test_a_good_copy_passes_the_checks(data, tmp_path):
    """The baseline the damaged cases depart from: the same copy, undamaged, passes every check."""
    from benchmark.data import check_inputs

    folder, tok, _ = data
    cfg = smoke_config(_SmokeShim(folder, tok), tmp_path / "results", {"BENCHMARK_AREA": "en6"})
    info = check_inputs(cfg)
    assert info.vocab_size == 2048 and 0 <= info.eod < 2048


def test_tokenizer_folder_that_does_not_exist(data, tmp_path):
    missing = tmp_path / "no-such-tokenizer"
    text, events = _run_expecting_error(data, tmp_path, {"TOKENIZER_PATH": missing})
    assert text.startswith(f"TOKENIZER_PATH={missing}: {missing}: tokenizer directory not found")
    assert "python -m utils.tokenizer download --dst DIR" in text
    _assert_aborted_with(events, text)


def test_corrupt_tokenizer_json(data, tmp_path):
    _, tok, _ = data
    (tok / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": ')
    text, events = _run_expecting_error(data, tmp_path)
    assert f"{tok / 'tokenizer.json'}: cannot be loaded as a Hugging Face tokenizer" in text
    assert "utils.tokenizer download" in text
    _assert_aborted_with(events, text)


def test_tokenizer_smaller_than_the_data_per_its_manifest(data, tmp_path):
    folder, _, _ = data
    manifest = folder / f"{EN6}.manifest.json"
    assert json.loads(manifest.read_text())["vocab_size"] == 2048
    small = tmp_path / "small-tokenizer"
    from utils.tokenizer import train_bpe

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"tiny corpus line {i} of words"}) + "\n" for i in range(50)))
    train_bpe([corpus], small, vocab_size=512)
    text, events = _run_expecting_error(data, tmp_path, {"TOKENIZER_PATH": small})
    assert text.startswith(f"training file {folder / EN6}.bin was tokenized with a 2048-id vocabulary ({manifest})")
    assert f"more ids than the 512-id tokenizer at TOKENIZER_PATH={small}" in text
    assert "point TOKENIZER_PATH at the tokenizer the data was made with" in text
    _assert_aborted_with(events, text)


def test_ids_beyond_the_vocabulary_found_by_sampling_without_a_manifest(data, tmp_path):
    """No manifest, int32 tokens (so the dtype bounds nothing): the sample finds the bad id at the end."""
    folder, _, valid = data
    (folder / f"{valid}.manifest.json").unlink()
    rng = np.random.default_rng(0)
    lengths = [300] * 80
    tokens = rng.integers(0, 2048, size=sum(lengths))
    tokens[-1] = 5000
    _write(folder / valid, lengths, tokens, np.int32)
    text, events = _run_expecting_error(data, tmp_path)
    assert text.startswith(f"validation file {folder / valid}.bin holds token id 5000, outside the 2048-id tokenizer")
    assert "(ids 0 to 2047)" in text and "re-tokenize it with the tokenizer the run uses" in text
    _assert_aborted_with(events, text)


def test_vocab_size_knob_smaller_than_the_data(data, tmp_path):
    folder, _, _ = data
    (folder / f"{EN6}.manifest.json").unlink()
    text, _ = _run_expecting_error(data, tmp_path, {"VOCAB_SIZE": 256})
    assert text.startswith(f"training file {folder / EN6}.bin holds token id ")
    assert "outside VOCAB_SIZE=256 (ids 0 to 255)" in text
    assert text.endswith("set VOCAB_SIZE=0 (the tokenizer's size) or at least 2048")


def test_truncated_index(data, tmp_path):
    folder, _, _ = data
    idx = folder / f"{EN6}.idx"
    idx.write_bytes(idx.read_bytes()[:-100])
    text, events = _run_expecting_error(data, tmp_path)
    assert text.startswith(f"training file: {idx}: {idx.stat().st_size} bytes, but its header")
    assert "the index is truncated or damaged; re-tokenize" in text
    _assert_aborted_with(events, text)


def test_truncated_bin(data, tmp_path):
    folder, _, valid = data
    binf = folder / f"{valid}.bin"
    binf.write_bytes(binf.read_bytes()[:1000])
    text, _ = _run_expecting_error(data, tmp_path)
    assert text.startswith(f"validation file: {binf}: 1000 bytes, but its index describes ")
    assert "re-tokenize" in text


@pytest.mark.parametrize("eval_set, need", [("reference", 64), ("file-order", 48)])
def test_validation_file_too_small_for_the_eval_set(data, tmp_path, eval_set, need):
    """40 windows of 256 tokens, against the 64 (reference: 4 global batches of 16) or 48 asked for."""
    folder, _, valid = data
    (folder / f"{valid}.manifest.json").unlink()
    _write(folder / valid, [257] * 40, np.arange(257 * 40) % 2000)
    text, events = _run_expecting_error(data, tmp_path, {"EVAL_SET": eval_set, "EVAL_SAMPLES": need})
    assert text.startswith(
        f"validation file {folder / valid}.bin holds 40 sequences of SEQ_LENGTH=256, fewer than the {need} "
        f"that one evaluation reads"
    )
    assert f"EVAL_SET={eval_set}" in text and "lower EVAL_SAMPLES or SEQ_LENGTH" in text
    _assert_aborted_with(events, text)


def test_training_set_smaller_than_one_global_batch(data, tmp_path):
    folder, _, _ = data
    (folder / f"{EN6}.manifest.json").unlink()
    _write(folder / EN6, [257] * 10, np.arange(257 * 10) % 2000)
    text, events = _run_expecting_error(data, tmp_path)
    assert text.startswith(
        f"the training files ({folder / EN6}.bin) hold 10 sequences of SEQ_LENGTH=256, "
        f"fewer than one global batch (GBS=16)"
    )
    assert "use more training data" in text
    _assert_aborted_with(events, text)


def test_training_file_without_one_sequence(data, tmp_path):
    folder, _, _ = data
    (folder / f"{EN6}.manifest.json").unlink()
    _write(folder / EN6, [100], np.arange(100))
    text, _ = _run_expecting_error(data, tmp_path)
    assert text.startswith(f"training file {folder / EN6}.bin holds not one sequence of SEQ_LENGTH + 1 = 257")


def test_index_reader_names_a_truncated_index(data):
    """utils.subset and the other tools read through IndexedReader: a DataError, not numpy's ValueError."""
    from benchmark.indexed import IndexedReader
    from utils.fileio import DataError

    folder, _, _ = data
    idx = folder / f"{EN6}.idx"
    idx.write_bytes(idx.read_bytes()[:40])
    with pytest.raises(DataError, match="the index is truncated or damaged; re-tokenize"):
        IndexedReader.open(folder / EN6)


def _train(data, tmp_path, env: dict) -> subprocess.CompletedProcess:
    folder, tok, _ = data
    keep = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    full = {
        **keep,
        "PRESET": "smoke",
        "DEVICE": "cpu",
        "PREPROCESSED_PATH": str(folder),
        "TOKENIZER_PATH": str(tok),
        "BENCHMARK_AREA": "en6",
        "RESULT_DIR": str(tmp_path / "results"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "benchmark.train", "--no-check"],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("damage", ["missing tokenizer", "truncated index"])
def test_the_entry_point_exits_2_without_a_traceback(data, tmp_path, damage):
    folder, _, _ = data
    env = {}
    if damage == "missing tokenizer":
        env["TOKENIZER_PATH"] = str(tmp_path / "nowhere")
        expect = f"error: TOKENIZER_PATH={tmp_path / 'nowhere'}: {tmp_path / 'nowhere'}: tokenizer directory not found"
    else:
        idx = folder / f"{EN6}.idx"
        idx.write_bytes(idx.read_bytes()[:-8])
        expect = f"error: training file: {idx}: "
    proc = _train(data, tmp_path, env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expect in proc.stderr
    assert "Traceback" not in proc.stderr
    log = tmp_path / "results" / "mlperf_smoke_seed1234.log"
    stop = mllog_events(log)[-1]
    assert stop["key"] == "run_stop" and stop["metadata"]["status"] == "aborted"
    assert expect.removeprefix("error: ") in stop["metadata"]["reason"]
