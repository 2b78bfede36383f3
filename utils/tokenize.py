"""Tokenize a C4-format JSON-lines file into a Megatron indexed dataset (.bin/.idx).

Run:
  python -m utils.tokenize --input FILE.json[.gz] --output-prefix PREFIX --tokenizer DIR \
      [--workers N] [--append-eod] [--skip-bad] [--force]

Writes `PREFIX_text_document.bin` and `PREFIX_text_document.idx` (Megatron-Core's indexed dataset
format, byte-identical to what its IndexedDatasetBuilder writes; see benchmark/indexed.py) and
`PREFIX_text_document.manifest.json` (documents, tokens, skipped lines, sizes and hashes).
One document per input line; its tokens are exactly the BPE ids of its `text`: no BOS, and
nothing appended unless --append-eod (then the tokenizer's eos id). This is what the MLPerf
reference writes: it runs NeMo's preprocess_data_for_megatron.py without --append-eod, and NeMo's
Hugging Face wrapper encodes with tokenize() + convert_tokens_to_ids(), which skips the
post-processor that would add Llama 3.1's <|begin_of_text|>. Here the `tokenizers` library encodes
with add_special_tokens=False, which gives the same ids (pinned by tests/test_utils_tokenize.py).

Tokens are stored as uint16 when the vocabulary has fewer than 65,500 ids, else int32, the rule
Megatron's own preprocessing applies (DType.optimal_dtype); readers take the dtype from the .idx.

Memory stays bounded whatever the file size: the input is read in blocks of whole lines of about
1 MB, at most 2 per worker in flight and 8 queued for the .bin writer's thread, and the index grows
by 12 bytes per document (~0.6 GB for one of C4's consolidated files, ~46M documents).

Outputs are written under temporary names and renamed only when complete: a killed run leaves no
file under a final name, and a rerun writes the same bytes. A rerun whose manifest shows the same
input, tokenizer and options is skipped (--force redoes it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from benchmark.indexed import IndexedWriter, token_dtype
from utils.errors import command, with_path
from utils.fileio import (
    DataError,
    LineReader,
    read_json,
    remove_stale_tmp,
    sha256_file,
    split_lines,
    tmp_path,
    write_json_atomic,
)
from utils.progress import Bar, add_flag, check_env
from utils.tokenizer import eos_id, load_fast_tokenizer

SUFFIX = "_text_document"
# Input bytes per unit of work: large enough that per-chunk overhead vanishes, small enough that
# 2 chunks per worker in flight stay a few MB.
CHUNK_BYTES = 1 << 20
# How many skipped lines the manifest lists individually (all of them are counted).
MAX_LISTED_SKIPS = 100


def output_paths(output_prefix: str | os.PathLike) -> tuple[Path, Path, Path]:
    """(.bin, .idx, .manifest.json) paths for an --output-prefix."""
    p = f"{output_prefix}{SUFFIX}"
    return Path(p + ".bin"), Path(p + ".idx"), Path(p + ".manifest.json")


# ----------------------------------------------------------------------------- encoding
@dataclass
class Encoded:
    """One chunk of lines, tokenized: flat tokens, a length per kept document, bad lines."""

    tokens: np.ndarray  # int32, all kept documents back to back
    lengths: np.ndarray  # int32, one per kept document
    bad: list[tuple[int, str]]  # (line number, reason)


_TOKENIZER = None
_EOD: int | None = None


def _init_encoder(tokenizer, eod: int | None) -> None:
    """Set the process's tokenizer: a loaded `tokenizers.Tokenizer` (in this process), or the path
    of a tokenizer.json (in a worker process, which then encodes single-threaded: the parallelism
    comes from the processes, and nested thread pools would oversubscribe the cores)."""
    global _TOKENIZER, _EOD
    if isinstance(tokenizer, str):
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(tokenizer)
    _TOKENIZER = tokenizer
    _EOD = eod


def _parse(raw: bytes) -> tuple[str | None, str]:
    """(document text, "") for a usable JSON line, else (None, the reason it is unusable)."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        return None, f"invalid UTF-8 at byte {e.start} of the line"
    except ValueError as e:
        return None, "empty line" if not raw.strip() else f"malformed JSON ({e})"
    if not isinstance(obj, dict) or "text" not in obj:
        return None, "no 'text' field"
    if not isinstance(obj["text"], str):
        return None, f"'text' is a {type(obj['text']).__name__}, not a string"
    return obj["text"], ""


def encode_chunk(chunk: tuple[int, bytes]) -> Encoded:
    """Tokenize a block of whole lines (number of its first line, the bytes) with the loaded tokenizer."""
    first_line, block = chunk
    lines = split_lines(block)
    texts: list[str] = []
    linenos: list[int] = []
    bad: list[tuple[int, str]] = []
    for i, raw in enumerate(lines):
        text, reason = _parse(raw)
        if text is None:
            bad.append((first_line + i, reason))
        else:
            texts.append(text)
            linenos.append(first_line + i)
    # encode_batch_fast skips the character offsets, which are not needed; add_special_tokens
    # =False bypasses the post-processor, so no BOS (the reference's ids, see module docstring).
    ids = [e.ids for e in _TOKENIZER.encode_batch_fast(texts, add_special_tokens=False)]
    lengths = np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))
    if not lengths.all():
        # An empty text has no tokens; the reference drops such a document silently, here it is
        # reported like any other unusable line (or skipped with --skip-bad, the same output).
        keep = lengths > 0
        bad.extend((linenos[j], "empty document (no tokens)") for j in np.flatnonzero(~keep))
        bad.sort()
        ids = [x for x, k in zip(ids, keep, strict=True) if k]
        lengths = lengths[keep]
    tokens = np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))
    if _EOD is not None:
        tokens = np.insert(tokens, np.cumsum(lengths), _EOD)
        lengths = lengths + 1
    return Encoded(tokens, lengths, bad)


# ----------------------------------------------------------------------------- writing
def _fingerprint(input_path: Path, tokenizer_dir: Path, append_eod: bool, skip_bad: bool) -> dict:
    st = input_path.stat()
    return {
        "input": str(input_path.resolve()),
        "input_bytes": st.st_size,
        "input_mtime_ns": st.st_mtime_ns,
        "tokenizer": str(tokenizer_dir.resolve()),
        "tokenizer_sha256": sha256_file(tokenizer_dir / "tokenizer.json"),
        "append_eod": append_eod,
        "skip_bad": skip_bad,
    }


def _up_to_date(manifest_path: Path, fingerprint: dict, bin_path: Path, idx_path: Path) -> dict | None:
    m = read_json(manifest_path)
    if not isinstance(m, dict) or any(m.get(k) != v for k, v in fingerprint.items()):
        return None
    outs = m.get("outputs", {})
    for key, path in (("bin", bin_path), ("idx", idx_path)):
        if not path.is_file() or outs.get(key, {}).get("bytes") != path.stat().st_size:
            return None
    return m


def tokenize_file(
    input: str | os.PathLike,
    output_prefix: str | os.PathLike,
    tokenizer_dir: str | os.PathLike,
    workers: int = 1,
    append_eod: bool = False,
    skip_bad: bool = False,
    force: bool = False,
    progress: bool = False,
    chunk_bytes: int = CHUNK_BYTES,
) -> dict:
    """Tokenize `input` (JSON lines, .json or .json.gz) into `{output_prefix}_text_document.{bin,idx}`.

    workers: 1 encodes in this process (the tokenizers library may use its own threads);
      N > 1 encodes in N worker processes, in input order, with at most 2N chunks in flight.
    append_eod: append the tokenizer's eos id to every document (the benchmark does not).
    skip_bad: leave out unusable lines (malformed JSON, no text, invalid UTF-8, empty document)
      and count them in the manifest, instead of stopping at the first with a DataError.
    force: redo even when the manifest shows the outputs are up to date.
    Returns the manifest (also written beside the outputs). Raises DataError on bad input.
    """
    input_path = Path(input)
    tokenizer_dir = Path(tokenizer_dir)
    if not input_path.is_file():
        raise DataError(f"{input_path}: input file not found")
    if workers < 1:
        raise DataError(f"--workers {workers}: use 1 or more")
    tok = load_fast_tokenizer(tokenizer_dir)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    eod = eos_id(tokenizer_dir, tok) if append_eod else None
    bin_path, idx_path, manifest_path = output_paths(output_prefix)
    bin_path.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(input_path, tokenizer_dir, append_eod, skip_bad)
    if not force and (m := _up_to_date(manifest_path, fingerprint, bin_path, idx_path)):
        return m
    for p in (bin_path, idx_path, manifest_path):
        remove_stale_tmp(p.parent, p.name)

    dtype = token_dtype(vocab_size)
    tmp_bin, tmp_idx = tmp_path(bin_path), tmp_path(idx_path)
    try:
        writer = IndexedWriter(tmp_bin, dtype)
    except OSError as e:
        raise with_path(e, bin_path, tmp_bin) from None
    skipped: list[tuple[int, str]] = []
    n_skipped = 0
    t0 = time.perf_counter()
    results = None
    try:
        with (
            LineReader(input_path) as reader,
            Bar(input_path.stat().st_size, input_path.name, "B", enabled=progress) as bar,
        ):
            chunks = reader.blocks(chunk_bytes)
            if workers == 1:
                _init_encoder(tok, eod)
                results = map(encode_chunk, chunks)
            else:
                from utils.parallel import ordered_map

                results = ordered_map(
                    encode_chunk,
                    chunks,
                    workers,
                    initializer=_init_encoder,
                    initargs=(str(tokenizer_dir / "tokenizer.json"), eod),
                )
            for enc in results:
                if enc.bad:
                    if not skip_bad:
                        line, reason = enc.bad[0]
                        raise DataError(
                            f"{input_path}:{line}: {reason}; fix or remove this line, or rerun with "
                            "--skip-bad to leave such lines out (they are counted in the manifest)"
                        )
                    n_skipped += len(enc.bad)
                    skipped.extend(enc.bad[: MAX_LISTED_SKIPS - len(skipped)])
                writer.add(enc.tokens, enc.lengths)
                bar.update(reader.position() - bar.n)
                dt = max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(
                    f"{writer.documents:,} documents, {writer.tokens:,} tokens, {writer.documents / dt:,.0f} "
                    f"documents/s, {writer.tokens / dt / 1e6:.2f}M tokens/s"
                )
        if writer.documents == 0:
            raise DataError(f"{input_path}: no documents to write (the file is empty or every line was skipped)")
        writer.finalize(tmp_idx)
        manifest = {
            **fingerprint,
            "vocab_size": vocab_size,
            "dtype": dtype.name,
            "eod_id": eod,
            "documents": writer.documents,
            "tokens": writer.tokens,
            "skipped_lines": n_skipped,
            "skipped": [{"line": ln, "reason": r} for ln, r in skipped],
            "outputs": {
                "bin": {"name": bin_path.name, "bytes": tmp_bin.stat().st_size, "sha256": writer.bin_sha256},
                "idx": {"name": idx_path.name, "bytes": tmp_idx.stat().st_size, "sha256": sha256_file(tmp_idx)},
            },
        }
        for p in (tmp_bin, tmp_idx):
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
        # The old manifest and index go first: if this process dies between the renames below,
        # the leftovers never look like a complete, up-to-date dataset.
        for p in (manifest_path, idx_path):
            p.unlink(missing_ok=True)
        os.replace(tmp_bin, bin_path)
        os.replace(tmp_idx, idx_path)
        write_json_atomic(manifest_path, manifest)
    except BaseException as e:
        writer.abort()
        for p in (tmp_bin, tmp_idx):
            p.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise with_path(e, bin_path, tmp_bin) from None  # a failed write() names no file
        raise
    finally:
        # Stop the worker processes now rather than when the generator is collected.
        if hasattr(results, "close"):
            results.close()
    manifest["seconds"] = round(time.perf_counter() - t0, 3)
    return manifest


# ----------------------------------------------------------------------------- CLI
@command
def main(argv: list[str] | None = None) -> int:
    """python -m utils.tokenize --input FILE --output-prefix PREFIX --tokenizer DIR [--workers N]"""
    p = argparse.ArgumentParser(
        prog="python -m utils.tokenize",
        description="Tokenize a C4-format JSON-lines file (.json or .json.gz, one document per "
        "line, field 'text') into a Megatron indexed dataset PREFIX_text_document.{bin,idx}, with "
        "a manifest beside it. Tokens are the plain BPE ids of each document: no BOS, no EOD "
        "unless --append-eod.",
    )
    p.add_argument("--input", required=True, type=Path, help="JSON-lines file, .json or .json.gz")
    p.add_argument("--output-prefix", required=True, help="writes PREFIX_text_document.{bin,idx,manifest.json}")
    p.add_argument("--tokenizer", required=True, type=Path, help="Hugging Face tokenizer directory")
    p.add_argument(
        "--workers",
        type=int,
        # Measured on 16 cores: 16 processes 4.26M tokens/s, 8 processes 3.07M (docs/DATA.md).
        default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
        help="tokenizing processes; 1 encodes in this process with the library's threads "
        "(default: the cores this process may use)",
    )
    p.add_argument("--append-eod", action="store_true", help="append the tokenizer's eos id to each document")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out unusable lines (bad JSON, no text, invalid UTF-8, empty) and count them "
        "in the manifest, instead of stopping at the first",
    )
    p.add_argument("--force", action="store_true", help="redo even if the manifest says the outputs are up to date")
    add_flag(p)
    a = p.parse_args(argv)
    try:
        check_env()
        m = tokenize_file(
            a.input,
            a.output_prefix,
            a.tokenizer,
            workers=a.workers,
            append_eod=a.append_eod,
            skip_bad=a.skip_bad,
            force=a.force,
            progress=not a.no_progress,
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no output was written under a final name", file=sys.stderr)
        return 130
    bin_path = output_paths(a.output_prefix)[0]
    if "seconds" not in m:
        print(f"{bin_path.with_suffix('')}: up to date ({m['documents']:,} documents, {m['tokens']:,} tokens)")
        return 0
    s = m["seconds"]
    print(
        f"{bin_path.with_suffix('')}: {m['documents']:,} documents, {m['tokens']:,} tokens "
        f"({m['dtype']}), skipped lines: {m['skipped_lines']}, {s:.1f} s, "
        f"{m['tokens'] / max(s, 1e-9) / 1e6:.2f}M tokens/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
