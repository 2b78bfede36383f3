"""Count the tokens of a tokenized dataset, or cut a leading subset with a token budget.

Run:
  python -m utils.subset --input PREFIX                                   (print the counts)
  python -m utils.subset --input PREFIX --output-prefix OUT --tokens 100M (write a subset)

PREFIX is a Megatron indexed dataset (PREFIX.bin + PREFIX.idx), or the --output-prefix given to
utils.tokenize (then PREFIX_text_document is read). The subset is the fewest leading documents,
in file order, whose tokens reach the budget (the rule that sizes C4's validation subset), written
as OUT_text_document.{bin,idx} with a manifest, so that e.g. a 100M- or 1B-token slice of
c4-train.en_6 can stand in for the full benchmark area while trying things out. Budgets take K, M,
B (or G) suffixes: 100M = 100,000,000 tokens. Documents are never split.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import numpy as np

from benchmark.indexed import IndexedReader, bin_path, idx_path, write_index
from utils.errors import command
from utils.fileio import DataError, sha256_file, tmp_path, write_json_atomic
from utils.progress import Bar, add_flag, check_env
from utils.tokenize import SUFFIX

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}


def parse_tokens(text: str) -> int:
    """'100M' -> 100_000_000; '1.5B' -> 1_500_000_000; '250000' -> 250_000."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMBGT]?)\s*", text.upper().replace("_", "").replace(",", ""))
    if not m:
        raise DataError(f"--tokens {text!r}: expected a number with an optional K/M/B suffix, e.g. 100M")
    n = int(round(float(m.group(1)) * _UNITS[m.group(2)]))
    if n < 1:
        raise DataError(f"--tokens {text!r}: must be at least 1")
    return n


def resolve_prefix(prefix: str | os.PathLike) -> str:
    """The dataset prefix: `prefix` itself if PREFIX.idx exists, else PREFIX_text_document."""
    p = str(prefix)
    for candidate in (p, p + SUFFIX):
        if idx_path(candidate).is_file():
            return candidate
    raise DataError(f"{p}: no {p}.idx or {p}{SUFFIX}.idx; pass the prefix of a tokenized dataset")


def count(prefix: str | os.PathLike) -> dict:
    """Documents, sequences and tokens of a tokenized dataset, and its token dtype."""
    r = IndexedReader.open(resolve_prefix(prefix))
    return {
        "prefix": r.prefix,
        "documents": r.documents,
        "sequences": len(r.lengths),
        "tokens": r.tokens,
        "dtype": r.dtype.name,
    }


def cut(input_prefix: str | os.PathLike, output_prefix: str | os.PathLike, tokens: int, progress: bool = False) -> dict:
    """Write the fewest leading documents of `input_prefix` whose tokens reach `tokens` to
    `{output_prefix}_text_document.{bin,idx}` (atomically) with a manifest; return the manifest.
    `progress`: a bar on stderr over the .bin bytes copied."""
    r = IndexedReader.open(resolve_prefix(input_prefix))
    cum = np.zeros(len(r.lengths) + 1, dtype=np.int64)
    np.cumsum(r.lengths, dtype=np.int64, out=cum[1:])
    doc_end_tokens = cum[r.doc_index[1:]]
    if r.documents == 0 or doc_end_tokens[-1] < tokens:
        raise DataError(f"{r.prefix}: holds {int(cum[-1]):,} tokens, fewer than the {tokens:,} asked for")
    k = int(np.searchsorted(doc_end_tokens, tokens, side="left")) + 1
    n_seq = int(r.doc_index[k])
    n_tokens = int(cum[n_seq])
    out = f"{output_prefix}{SUFFIX}"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if Path(out).resolve() == Path(r.prefix).resolve():
        raise DataError(f"--output-prefix {output_prefix}: would overwrite the input")
    tmp_bin, tmp_idx = tmp_path(bin_path(out)), tmp_path(idx_path(out))
    try:
        n_bytes = n_tokens * r.dtype.itemsize
        with (
            open(bin_path(r.prefix), "rb") as src,
            open(tmp_bin, "wb") as dst,
            Bar(n_bytes, bin_path(out).name, "B", enabled=progress) as bar,
        ):
            _copy_bytes(src, dst, n_bytes, bar.update)
        write_index(tmp_idx, r.dtype, np.asarray(r.lengths[:n_seq]), np.asarray(r.doc_index[: k + 1]))
        # As in utils.tokenize: old manifest and index go first, the index is renamed last.
        Path(f"{out}.manifest.json").unlink(missing_ok=True)
        idx_path(out).unlink(missing_ok=True)
        os.replace(tmp_bin, bin_path(out))
        os.replace(tmp_idx, idx_path(out))
    except BaseException:
        tmp_bin.unlink(missing_ok=True)
        tmp_idx.unlink(missing_ok=True)
        raise
    manifest = {
        "input": str(Path(r.prefix).resolve()),
        "budget_tokens": tokens,
        "documents": k,
        "tokens": n_tokens,
        "dtype": r.dtype.name,
        "outputs": {
            "bin": {
                "name": bin_path(out).name,
                "bytes": bin_path(out).stat().st_size,
                "sha256": sha256_file(bin_path(out)),
            },
            "idx": {
                "name": idx_path(out).name,
                "bytes": idx_path(out).stat().st_size,
                "sha256": sha256_file(idx_path(out)),
            },
        },
    }
    write_json_atomic(f"{out}.manifest.json", manifest)
    return manifest


def _copy_bytes(src, dst, n: int, on_bytes=lambda n: None) -> None:
    """Copy the first n bytes of src to dst, in blocks; `on_bytes` is told of each block."""
    remaining = n
    while remaining:
        block = src.read(min(remaining, 1 << 24))
        if not block:
            raise DataError(f"{src.name}: ends before the {n:,} bytes its index describes")
        dst.write(block)
        remaining -= len(block)
        on_bytes(len(block))


@command
def main(argv: list[str] | None = None) -> int:
    """python -m utils.subset --input PREFIX [--output-prefix OUT --tokens 100M]"""
    p = argparse.ArgumentParser(
        prog="python -m utils.subset",
        description="Count the documents and tokens of a tokenized dataset, or write its fewest leading "
        "documents that reach a token budget as OUT_text_document.{bin,idx}.",
    )
    p.add_argument(
        "--input", required=True, help="dataset prefix (PREFIX.bin/.idx) or utils.tokenize's --output-prefix"
    )
    p.add_argument("--output-prefix", default=None, help="write OUT_text_document.{bin,idx,manifest.json}")
    p.add_argument("--tokens", default=None, help="token budget, e.g. 100M, 1B (needs --output-prefix)")
    add_flag(p)
    a = p.parse_args(argv)
    if (a.output_prefix is None) != (a.tokens is None):
        p.error("--output-prefix and --tokens go together (neither: just count)")
    try:
        check_env()
        if a.output_prefix is None:
            c = count(a.input)
            print(f"{c['prefix']}: {c['documents']:,} documents, {c['tokens']:,} tokens ({c['dtype']})")
        else:
            m = cut(a.input, a.output_prefix, parse_tokens(a.tokens), progress=not a.no_progress)
            print(f"{a.output_prefix}{SUFFIX}: {m['documents']:,} documents, {m['tokens']:,} tokens")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
