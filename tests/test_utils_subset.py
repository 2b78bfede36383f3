"""utils.subset: token counts and leading subsets cut at a token budget."""

import json

import numpy as np
import pytest

from benchmark.indexed import IndexedReader, IndexedWriter, write_index
from utils import subset
from utils.fileio import DataError


@pytest.fixture
def dataset(tmp_path):
    lengths = np.array([5, 3, 7, 1, 4, 10, 2], dtype=np.int32)
    w = IndexedWriter(tmp_path / "c4-train.en_6_text_document.bin", np.uint16)
    w.add(np.arange(lengths.sum()) % 2048, lengths)
    w.finalize(tmp_path / "c4-train.en_6_text_document.idx")
    return tmp_path / "c4-train.en_6", lengths


def test_parse_tokens():
    assert subset.parse_tokens("100M") == 100_000_000
    assert subset.parse_tokens("1B") == subset.parse_tokens("1g") == 1_000_000_000
    assert subset.parse_tokens("1.5k") == 1500 and subset.parse_tokens("250_000") == 250_000
    for bad in ("lots", "-5", "0", "1X"):
        with pytest.raises(DataError, match="--tokens"):
            subset.parse_tokens(bad)


def test_count_accepts_either_prefix(dataset):
    prefix, lengths = dataset
    c = subset.count(prefix)
    assert (c["documents"], c["tokens"], c["dtype"]) == (7, int(lengths.sum()), "uint16")
    assert subset.count(f"{prefix}_text_document") == c


@pytest.mark.parametrize(("budget", "docs"), [(1, 1), (5, 1), (6, 2), (8, 2), (9, 3), (32, 7), (31, 7)])
def test_cut_takes_the_fewest_leading_documents_reaching_the_budget(dataset, tmp_path, budget, docs):
    prefix, lengths = dataset
    m = subset.cut(prefix, tmp_path / "out" / "sub", budget)
    assert m["documents"] == docs and m["tokens"] == int(lengths[:docs].sum()) >= budget
    src = IndexedReader.open(f"{prefix}_text_document")
    out = IndexedReader.open(tmp_path / "out" / "sub_text_document")
    assert out.documents == docs and out.dtype == src.dtype
    for i in range(docs):
        assert out.document(i).tolist() == src.document(i).tolist()
    saved = json.loads((tmp_path / "out" / "sub_text_document.manifest.json").read_text())
    assert saved["budget_tokens"] == budget and saved["tokens"] == m["tokens"]


def test_cut_reads_back_through_megatron(dataset, tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    prefix, lengths = dataset
    subset.cut(prefix, tmp_path / "sub", 10)
    ds = IndexedDataset(str(tmp_path / "sub_text_document"))
    assert len(ds) == 3 and [len(ds[i]) for i in range(3)] == lengths[:3].tolist()


def test_multi_sequence_documents(tmp_path):
    # A dataset written with sentence splitting: document 0 = sequences 0-1, document 1 = 2-4.
    lengths = np.array([2, 3, 1, 1, 4], dtype=np.int32)
    (tmp_path / "d.bin").write_bytes(np.arange(11, dtype=np.int32).tobytes())
    write_index(tmp_path / "d.idx", np.int32, lengths, np.array([0, 2, 5]))
    m = subset.cut(tmp_path / "d", tmp_path / "s", 6)
    assert m["documents"] == 2 and m["tokens"] == 11
    m = subset.cut(tmp_path / "d", tmp_path / "s", 5)
    assert m["documents"] == 1 and m["tokens"] == 5
    assert IndexedReader.open(tmp_path / "s_text_document").document(0).tolist() == [0, 1, 2, 3, 4]


def test_errors_and_cli(dataset, tmp_path, capsys):
    prefix, lengths = dataset
    with pytest.raises(DataError, match="holds 32 tokens, fewer than the 33 asked for"):
        subset.cut(prefix, tmp_path / "x", 33)
    assert not list(tmp_path.glob("x_*")) and not list(tmp_path.glob(".x_*"))
    with pytest.raises(DataError, match="would overwrite the input"):
        subset.cut(prefix, prefix, 5)
    assert subset.main(["--input", str(prefix)]) == 0
    assert "7 documents, 32 tokens (uint16)" in capsys.readouterr().out
    assert subset.main(["--input", str(prefix), "--output-prefix", str(tmp_path / "y"), "--tokens", "10"]) == 0
    assert "3 documents, 15 tokens" in capsys.readouterr().out
    assert subset.main(["--input", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(SystemExit):
        subset.main(["--input", str(prefix), "--tokens", "10"])
