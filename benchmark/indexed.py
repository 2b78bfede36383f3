"""Megatron-Core's indexed dataset format (`.bin` + `.idx`, "MMIDIDX" version 1), written and read
without importing Megatron-Core.

Why not Megatron-Core's own IndexedDatasetBuilder in the tokenizer: importing
`megatron.core.datasets.indexed_dataset` pulls in torch and the rest of megatron.core, about 7 s
of CPU on a 2-core machine, which alone would cost a third of the tokenizer's throughput on a
30,000-document file; and its builder keeps a Python int per document and builds the pointers in
a Python loop (C4's consolidated files have ~46M documents each). The format is small and fixed;
tests/test_utils_indexed.py checks that this writer produces byte-identical files to
IndexedDatasetBuilder (one sequence per document, via add_item + end_document, as the MLPerf
reference's preprocessing does) and that Megatron-Core's IndexedDataset reads them back.

Layout of the .idx (little-endian):
  b"MMIDIDX\\x00\\x00", u64 version = 1, u8 dtype code,
  u64 sequence count S, u64 document count D (= number of documents + 1),
  i32[S] sequence lengths, i64[S] byte offsets of the sequences in the .bin,
  i64[D] document boundaries (sequence index where each document starts, then S).
The .bin holds the tokens of all sequences back to back, in the dtype of the .idx.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import struct
import threading
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.errors import DataError

HEADER = b"MMIDIDX\x00\x00"
VERSION = 1
# Megatron-Core's DType codes (megatron/core/datasets/indexed_dataset.py).
DTYPE_CODES = {
    np.dtype(np.uint8): 1,
    np.dtype(np.int8): 2,
    np.dtype(np.int16): 3,
    np.dtype(np.int32): 4,
    np.dtype(np.int64): 5,
    np.dtype(np.float64): 6,
    np.dtype(np.float32): 7,
    np.dtype(np.uint16): 8,
}
CODE_DTYPES = {v: k for k, v in DTYPE_CODES.items()}


def token_dtype(vocab_size: int) -> np.dtype:
    """The token dtype Megatron's preprocessing picks (DType.optimal_dtype): uint16 below 65,500
    ids, else int32. Llama 3.1's 128,256 ids give int32."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


def bin_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{prefix}.bin")


def idx_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{prefix}.idx")


class _HashingSink:
    """Writes buffers to a file and hashes them (sha256) on a thread of its own.

    File writes and sha256 updates of large buffers release the GIL, so the caller's thread only
    queues: in utils.tokenize that thread also reads the input and feeds every worker, and writing
    then re-reading a .bin of tens of GB to hash it had cost it about a third of its time at 64
    workers. At most `depth` buffers wait, so memory stays bounded. An error in the thread is
    raised by the next `write` or by `close`.
    """

    def __init__(self, path: str | os.PathLike, depth: int = 8):
        self._f = open(path, "wb")
        self._sha = hashlib.sha256()
        self._queue: queue.Queue = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="bin-writer")
        self._thread.start()

    def _run(self) -> None:
        while (buf := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._f.write(buf)
                    self._sha.update(buf)
                except BaseException as e:  # reported to the caller's thread
                    self._error = e

    def write(self, buf) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(buf)

    def close(self) -> str:
        """Write what is queued, close the file; the sha256 hex digest of everything written."""
        self._queue.put(None)
        self._thread.join()
        self._f.close()
        if self._error is not None:
            raise self._error
        return self._sha.hexdigest()


class IndexedWriter:
    """Write one document = one sequence at a time, or many at once with `add`.

    Paths are given explicitly so callers can write under temporary names and rename later.
    The index is kept as typed arrays: 12 bytes per document while writing. The .bin is written
    and hashed on a background thread; `bin_sha256` holds its digest after `finalize`.
    """

    def __init__(self, bin_file: str | os.PathLike, dtype: np.dtype | type):
        self.dtype = np.dtype(dtype)
        if self.dtype not in DTYPE_CODES:
            raise ValueError(f"dtype {self.dtype} has no Megatron code")
        self._sink = _HashingSink(bin_file)
        self._lengths = array("i")
        self.tokens = 0
        self.bin_sha256: str | None = None

    @property
    def documents(self) -> int:
        return len(self._lengths)

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append documents: `tokens` all of them back to back, `lengths` one entry each."""
        lengths = np.asarray(lengths, dtype=np.int32)
        tokens = np.asarray(tokens)
        n = int(lengths.sum(dtype=np.int64))
        if tokens.size != n:
            raise ValueError(f"{tokens.size} tokens but the lengths add up to {n}")
        # Always a copy: the sink thread reads it after this returns, and the caller may reuse its array.
        self._sink.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
        self._lengths.frombytes(lengths.tobytes())
        self.tokens += n

    def finalize(self, idx_file: str | os.PathLike) -> None:
        """Close the .bin (its digest in `bin_sha256`) and write the .idx."""
        self.bin_sha256 = self._sink.close()
        write_index(idx_file, self.dtype, np.frombuffer(self._lengths, dtype=np.int32))

    def abort(self) -> None:
        with contextlib.suppress(BaseException):
            self._sink.close()


def write_index(
    idx_file: str | os.PathLike, dtype: np.dtype, lengths: np.ndarray, doc_index: np.ndarray | None = None
) -> None:
    """Write an .idx for sequences with these token counts, back to back in the .bin.

    `doc_index`: where each document starts, in sequences, then the sequence count; default one
    sequence per document (what utils.tokenize and the reference's preprocessing write).
    """
    dtype = np.dtype(dtype)
    s = len(lengths)
    pointers = np.zeros(s, dtype=np.int64)
    if s > 1:
        np.cumsum(lengths[:-1], dtype=np.int64, out=pointers[1:])
    pointers *= dtype.itemsize
    doc_index = np.arange(s + 1, dtype=np.int64) if doc_index is None else np.asarray(doc_index, dtype=np.int64)
    if doc_index[0] != 0 or doc_index[-1] != s:
        raise ValueError("doc_index must start at 0 and end at the sequence count")
    with open(idx_file, "wb") as f:
        f.write(HEADER)
        f.write(struct.pack("<Q", VERSION))
        f.write(struct.pack("<B", DTYPE_CODES[dtype]))
        f.write(struct.pack("<Q", s))
        f.write(struct.pack("<Q", len(doc_index)))
        f.write(np.ascontiguousarray(lengths, dtype=np.int32).tobytes())
        f.write(pointers.tobytes())
        f.write(doc_index.tobytes())


@dataclass
class IndexedReader:
    """Memory-mapped view of an indexed dataset: `lengths` and `pointers` per sequence,
    `doc_index` per document, and `document(i)`."""

    prefix: str
    dtype: np.dtype
    lengths: np.ndarray
    pointers: np.ndarray
    doc_index: np.ndarray
    tokens_mmap: np.ndarray

    @classmethod
    def open(cls, prefix: str | os.PathLike) -> IndexedReader:
        ip, bp = idx_path(prefix), bin_path(prefix)
        for p in (ip, bp):
            if not p.is_file():
                raise DataError(f"{p}: not found; pass the prefix of a tokenized dataset (PATH without .bin/.idx)")
        with open(ip, "rb") as f:
            head = f.read(34)
        if len(head) < 34 or head[:9] != HEADER:
            raise DataError(f"{ip}: not a Megatron indexed dataset index (bad header)")
        version, code, s, d = struct.unpack("<QBQQ", head[9:34])
        if version != VERSION or code not in CODE_DTYPES:
            raise DataError(f"{ip}: unsupported index version {version} or dtype code {code}")
        # A truncated (or padded) index would otherwise fail inside numpy with a bare ValueError,
        # or worse, be read with garbage lengths: its size is fixed by the two counts.
        want = 34 + 12 * s + 8 * d
        have = ip.stat().st_size
        if have != want:
            raise DataError(
                f"{ip}: {have} bytes, but its header ({s} sequences, {d - 1} documents) needs {want}: "
                f"the index is truncated or damaged; re-tokenize"
            )
        idx = np.memmap(ip, dtype=np.uint8, mode="r")
        off = 34
        lengths = np.frombuffer(idx, dtype=np.int32, count=s, offset=off)
        off += 4 * s
        pointers = np.frombuffer(idx, dtype=np.int64, count=s, offset=off)
        off += 8 * s
        doc_index = np.frombuffer(idx, dtype=np.int64, count=d, offset=off)
        dtype = CODE_DTYPES[code]
        size = bp.stat().st_size
        tokens = np.memmap(bp, dtype=dtype, mode="r") if size else np.zeros(0, dtype=dtype)
        expected = int(lengths.sum(dtype=np.int64)) * dtype.itemsize
        if size != expected:
            raise DataError(f"{bp}: {size} bytes, but its index describes {expected}; re-tokenize")
        return cls(str(prefix), dtype, lengths, pointers, doc_index, tokens)

    @property
    def documents(self) -> int:
        return len(self.doc_index) - 1

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum(dtype=np.int64))

    def document(self, i: int) -> np.ndarray:
        """The tokens of document i (all its sequences, which are contiguous in the .bin)."""
        first, end = int(self.doc_index[i]), int(self.doc_index[i + 1])
        start = int(self.pointers[first]) // self.dtype.itemsize if end > first else 0
        n = int(self.lengths[first:end].sum(dtype=np.int64))
        return np.asarray(self.tokens_mmap[start : start + n])
