"""utils.smoke.prepare: the embedded dataset's layout, sizes, idempotence and repair."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from benchmark.indexed import IndexedReader
from utils import smoke


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    logs = []
    data = smoke.prepare(root, seed=1234, log=logs.append)
    return root, data, logs


def test_layout_and_fields(built):
    root, data, logs = built
    assert [line.split()[2] for line in logs[:4]] == ["raw", "tokenizer", "merged", "preprocessed"]
    assert dataclasses.is_dataclass(data) and data.__dataclass_params__.frozen
    assert data.tokenizer_dir == root / "tokenizer" and data.data_dir == root / "preprocessed"
    assert data.train_prefixes == (
        str(root / "preprocessed" / "c4-train.en_6_text_document"),
        str(root / "preprocessed" / "c4-train.en_7_text_document"),
    )
    assert data.valid_prefix == str(
        root / "preprocessed" / f"c4-validation-{data.n_validation}-samples.en_text_document"
    )
    raw = sorted(p.name for p in (root / "raw").iterdir())
    assert raw == [f"c4-train.{i:05d}-of-00016.json.gz" for i in range(16)] + [
        "c4-validation.00000-of-00002.json.gz",
        "c4-validation.00001-of-00002.json.gz",
    ]
    merged = sorted(p.name for p in (root / "merged").iterdir())
    assert merged == [f"c4-train.en_{k}.json.gz" for k in range(8)] + [
        f"c4-validation-{data.n_validation}-samples.en.json.gz",
        "manifest.json",
    ]
    pre = sorted(p.name for p in (root / "preprocessed").iterdir())
    stems = [Path(p).name for p in (*data.train_prefixes, data.valid_prefix)]
    assert pre == sorted(f"{s}.{ext}" for s in stems for ext in ("bin", "idx", "manifest.json"))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(data.tokenizer_dir))
    assert len(tok) == 2048


def test_sizes(built):
    _, data, _ = built
    train = [IndexedReader.open(p) for p in data.train_prefixes]
    valid = IndexedReader.open(data.valid_prefix)
    assert sum(r.tokens for r in train) >= 1_000_000
    assert valid.tokens >= 64 * 257 and valid.documents == data.n_validation
    # n_validation is the fewest documents reaching the validation token target.
    assert int(valid.lengths[:-1].sum()) < smoke.VALID_TOKENS <= valid.tokens
    assert all(r.dtype.name == "uint16" for r in (*train, valid))
    manifest = json.loads(Path(data.valid_prefix + ".manifest.json").read_text())
    assert manifest["tokens"] == valid.tokens and manifest["eod_id"] is None


def test_second_call_reuses_everything(built):
    root, data, _ = built
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    logs = []
    assert smoke.prepare(root, seed=1234, log=logs.append) == data
    assert logs == []  # no stage ran
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before


def test_index_cache_beside_the_data_is_kept_and_the_data_reused(built):
    """A run on the embedded data caches its dataset indices in data_dir/index_cache (the default of
    INDEX_CACHE_DIR, benchmark/train.py); the next prepare must neither rebuild the data nor drop it."""
    root, data, _ = built
    cache = data.data_dir / "index_cache"
    cache.mkdir()
    cached = cache / "0123abcd-GPTDataset-train-document_index.npy"
    cached.write_bytes(b"index")
    try:
        bin6 = Path(data.train_prefixes[0] + ".bin")
        before = bin6.stat()
        for _ in range(2):
            logs = []
            assert smoke.prepare(root, seed=1234, log=logs.append) == data
            assert logs == []  # no stage ran
        after = bin6.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert cached.read_bytes() == b"index"
    finally:
        shutil.rmtree(cache, ignore_errors=True)  # the later tests compare the folder with smoke.json


def test_damaged_or_partial_stages_are_rebuilt_identically(built):
    root, data, _ = built

    def data_files():
        state = json.loads((root / "smoke.json").read_text())
        # Manifests record input time stamps, which a rebuild changes; the data must not change.
        return {n: f for st in state["stages"].values() for n, f in st["files"].items() if "manifest" not in n}

    before = data_files()
    bin7 = Path(data.train_prefixes[1] + ".bin")
    good = bin7.read_bytes()
    bin7.write_bytes(good[: len(good) // 2])  # a damaged output
    logs = []
    assert smoke.prepare(root, seed=1234, log=logs.append) == data
    assert [line.split()[2] for line in logs[:-1]] == ["preprocessed"]
    assert bin7.read_bytes() == good

    (root / "merged" / "c4-train.en_3.json.gz").unlink()  # an interrupted earlier attempt
    logs = []
    assert smoke.prepare(root, seed=1234, log=logs.append) == data
    assert [line.split()[2] for line in logs[:-1]] == ["merged", "preprocessed"]
    assert data_files() == before


def test_cli(built, capsys):
    root, data, _ = built
    assert smoke.main(["--dst", str(root)]) == 0
    out = capsys.readouterr().out
    assert data.train_prefixes[0] in out and f"({data.n_validation} documents)" in out


def test_cli_summary_and_the_benchmark_side_caller(built, tmp_path):
    """The benchmark reaches the data set through the command (it imports nothing from utils/):
    the summary the command writes carries exactly what prepare() returns."""
    from benchmark import smoke_data

    root, data, _ = built
    summary = tmp_path / "summary.json"
    assert smoke.main(["--dst", str(root), "--summary", str(summary)]) == 0
    assert smoke_data.SmokeData.from_json(json.loads(summary.read_text())) == data
    assert smoke_data.prepare(root, seed=1234) == data


def test_benchmark_side_caller_reports_the_tools_error(tmp_path):
    from benchmark import smoke_data
    from benchmark.errors import DataError

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(
        DataError, match=f"smoke data set in {blocker}/smoke could not be built .*a part of the path is a file"
    ):
        smoke_data.prepare(blocker / "smoke", seed=1234)
