"""benchmark.indexed writes exactly what Megatron-Core's IndexedDatasetBuilder writes, and reads it."""

import numpy as np
import pytest

from benchmark import indexed


def _docs(seed, n, high):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, high, size=int(rng.integers(1, 300)), dtype=np.int64) for _ in range(n)]


@pytest.mark.parametrize("vocab", [2048, 128256])
def test_byte_identical_to_megatron_builder_and_readable(tmp_path, vocab):
    import torch
    from megatron.core.datasets.indexed_dataset import DType, IndexedDataset, IndexedDatasetBuilder

    dtype = indexed.token_dtype(vocab)
    assert dtype == np.dtype(DType.optimal_dtype(vocab))
    docs = _docs(vocab, 257, vocab)

    # The reference's preprocessing: one add_item per document (no sentence splitting), then
    # end_document, with the dtype Megatron picks for the vocabulary size.
    ref = IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=DType.optimal_dtype(vocab))
    for d in docs:
        ref.add_item(torch.IntTensor(d.astype(np.int32)))
        ref.end_document()
    ref.finalize(str(tmp_path / "ref.idx"))

    w = indexed.IndexedWriter(tmp_path / "ours.bin", dtype)
    for start in range(0, len(docs), 50):  # several documents per call, uneven chunks
        chunk = docs[start : start + 50]
        w.add(np.concatenate(chunk).astype(np.int32), np.array([len(d) for d in chunk]))
    w.finalize(tmp_path / "ours.idx")
    assert (tmp_path / "ours.bin").read_bytes() == (tmp_path / "ref.bin").read_bytes()
    assert (tmp_path / "ours.idx").read_bytes() == (tmp_path / "ref.idx").read_bytes()

    ds = IndexedDataset(str(tmp_path / "ours"))
    assert len(ds) == len(docs) and ds.index.dtype == dtype
    assert list(ds.document_indices) == list(range(len(docs) + 1))
    for i in (0, 1, 128, 256):
        assert ds[i].tolist() == docs[i].tolist()

    r = indexed.IndexedReader.open(tmp_path / "ours")
    assert r.documents == len(docs) and r.tokens == sum(len(d) for d in docs) and r.dtype == dtype
    assert r.document(200).tolist() == docs[200].tolist()


def test_dtype_rule():
    assert indexed.token_dtype(65499) == np.uint16
    assert indexed.token_dtype(65500) == np.int32
    assert indexed.token_dtype(128256) == np.int32


def test_reader_rejects_damaged_files(tmp_path):
    from utils.fileio import DataError

    w = indexed.IndexedWriter(tmp_path / "d.bin", np.uint16)
    w.add(np.arange(10), np.array([4, 6]))
    w.finalize(tmp_path / "d.idx")
    with open(tmp_path / "d.bin", "ab") as f:
        f.write(b"xx")
    with pytest.raises(DataError, match="re-tokenize"):
        indexed.IndexedReader.open(tmp_path / "d")
    (tmp_path / "d.idx").write_bytes(b"garbage")
    with pytest.raises(DataError, match="bad header"):
        indexed.IndexedReader.open(tmp_path / "d")
    with pytest.raises(DataError, match="not found"):
        indexed.IndexedReader.open(tmp_path / "nothing")


def test_writer_hashes_what_it_writes_and_reports_write_errors(tmp_path, monkeypatch):
    import hashlib

    w = indexed.IndexedWriter(tmp_path / "h.bin", np.int32)
    rng = np.random.default_rng(0)
    buf = rng.integers(0, 128256, size=1000, dtype=np.int32)
    for _ in range(20):
        w.add(buf, np.array([400, 600], dtype=np.int32))
        buf[:] = 0  # the caller reusing its array must not change what was written
    w.finalize(tmp_path / "h.idx")
    data = (tmp_path / "h.bin").read_bytes()
    assert len(data) == 4 * (1000 + 19 * 1000)
    assert w.bin_sha256 == hashlib.sha256(data).hexdigest()
    assert np.frombuffer(data[:4000], dtype=np.int32).any() and not np.frombuffer(data[4000:], dtype=np.int32).any()

    # A failing write in the writer thread (a full disk, say) reaches the caller.
    w = indexed.IndexedWriter(tmp_path / "f.bin", np.int32)

    def full(_buf):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(w._sink._f, "write", full)
    with pytest.raises(OSError, match="No space left"):
        for _ in range(100):
            w.add(buf, np.array([1000], dtype=np.int32))
        w.finalize(tmp_path / "f.idx")
    w.abort()
