"""C4 en for the benchmark: download, compress, consolidate; or the official pre-tokenized files.

download: see utils/download.py. download-preprocessed: see utils/r2.py. compress: gzip the .json
files of a folder in parallel, each written atomically (for sources that hold uncompressed JSON
lines).

Run:
  python -m utils.c4 download --dst C4_PATH [--source hf] [--workers 8]
  python -m utils.c4 download --dst C4_PATH --source rclone --remote REMOTE:PATH
  python -m utils.c4 download --dst C4_PATH --source local --from DIR
  python -m utils.c4 download-preprocessed --dst PREPROCESSED_PATH [--tokenizer-dst DIR] [--base-url URL]
  python -m utils.c4 compress DIR [--workers N] [--keep]
  python -m utils.c4 consolidate --src C4_PATH --dst MERGED_C4_PATH [--n-validation 91205]

consolidate: the train shards, in index order, are split into 8 equal groups and each group's
gzip files are concatenated byte for byte (a concatenation of gzip streams is a valid gzip file)
into `c4-train.en_{k}.json.gz`; for C4's 1,024 shards, group k is shards 128k..128k+127. The
validation shards are read in order and their first N lines written to
`c4-validation-{N}-samples.en.json.gz` (N = 91,205 for the benchmark: the fewest documents that
give 5,760 sequences of 8,192 tokens). `manifest.json` records, for every output, its inputs,
document count, size and sha256. Everything streams in blocks; outputs are written under
temporary names and renamed when complete; an output whose manifest entry still matches its
inputs is not redone.

Every subcommand shows its progress on stderr (a bar on a terminal, a plain line a minute in a
log; --no-progress or PROGRESS=0 turns it off, PROGRESS=1 forces the bar): utils/progress.py.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

# The raw shards are named by the download (utils/download.py), which this module drives.
from utils import download as dl
from utils.download import shard_name
from utils.errors import command, positive_int
from utils.fileio import (
    BLOCK,
    DataError,
    LineReader,
    atomic_output,
    count_lines_gz_bytes,
    read_json,
    remove_stale_tmp,
    write_json_atomic,
)
from utils.progress import Bar, add_flag, check_env

C4_N_VALIDATION = 91205
N_GROUPS = 8
MANIFEST = "manifest.json"

_SHARD = re.compile(r"^c4-(train|validation)\.(\d{5})-of-(\d{5})\.json\.gz$")


def group_name(k: int) -> str:
    return f"c4-train.en_{k}.json.gz"


def validation_name(n: int) -> str:
    return f"c4-validation-{n}-samples.en.json.gz"


def find_shards(src: Path, split: str, expected_count: int | None = None) -> list[Path]:
    """All shards of `split` in `src`, in index order, checked complete.

    The shard count comes from the file names (`-of-NNNNN`) unless `expected_count` is given.
    Raises DataError listing every missing shard by name.
    """
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: folder not found")
    found: dict[int, set[int]] = {}
    for p in src.iterdir():
        m = _SHARD.match(p.name)
        if m and m.group(1) == split:
            found.setdefault(int(m.group(3)), set()).add(int(m.group(2)))
    if expected_count is None:
        if not found:
            raise DataError(
                f"{src}: no c4-{split}.*-of-*.json.gz shards; download them with "
                f"`python -m utils.c4 download --dst {src}`"
            )
        if len(found) > 1:
            counts = ", ".join(f"-of-{c:05d}" for c in sorted(found))
            raise DataError(f"{src}: c4-{split} shards of different sets ({counts}); keep one set")
        expected_count = next(iter(found))
    have = found.get(expected_count, set())
    missing = [shard_name(split, i, expected_count) for i in range(expected_count) if i not in have]
    if missing:
        raise DataError(
            f"{src}: {len(missing)} of {expected_count} c4-{split} shards missing: {', '.join(missing)}; "
            f"download them (`python -m utils.c4 download` resumes) and rerun"
        )
    return [src / shard_name(split, i, expected_count) for i in range(expected_count)]


def _stream_concat(inputs: list[Path], out, on_bytes: Callable[[int], None] | None = None) -> tuple[int, str]:
    """Copy `inputs` byte for byte into the open file `out`; return (documents, sha256).
    `on_bytes(n)` is told of every block copied (the progress bar).

    Each input is also decompressed on the fly to count its lines and to prove it is a complete
    gzip stream: a truncated shard is reported by name instead of ending up in the merged file.
    """
    h = hashlib.sha256()
    docs = 0
    for path in inputs:

        def blocks(path=path) -> Iterator[bytes]:
            with open(path, "rb") as f:
                while block := f.read(BLOCK):
                    out.write(block)
                    h.update(block)
                    if on_bytes is not None:
                        on_bytes(len(block))
                    yield block

        docs += count_lines_gz_bytes(blocks(), str(path))
    return docs, h.hexdigest()


def _inputs_record(inputs: list[Path]) -> list[dict]:
    return [{"name": p.name, "bytes": p.stat().st_size} for p in inputs]


def _entry_current(entry: dict | None, inputs: list[Path], out: Path, extra: dict) -> bool:
    """Whether a manifest entry still describes `out` as built from `inputs` (names and sizes)."""
    if not isinstance(entry, dict) or not out.is_file():
        return False
    if entry.get("inputs") != _inputs_record(inputs) or entry.get("bytes") != out.stat().st_size:
        return False
    return all(entry.get(k) == v for k, v in extra.items())


def consolidate(
    src: str | Path,
    dst: str | Path,
    n_validation: int = C4_N_VALIDATION,
    n_groups: int = N_GROUPS,
    workers: int = 1,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
) -> dict:
    """Merge C4 shards in `src` into `n_groups` train files and one validation subset in `dst`.

    Train: shards in index order, split into `n_groups` equal groups, gzip bytes concatenated
    into `c4-train.en_{k}.json.gz`. Validation: the validation shards in order, first
    `n_validation` lines, gzip'd into `c4-validation-{n_validation}-samples.en.json.gz`.
    Writes `manifest.json` (per output: inputs, documents, bytes, sha256) and returns it.
    `workers` > 1 builds that many train groups at a time. Outputs whose manifest entry matches
    are kept. Raises DataError on missing or damaged shards. `progress`: a bar on stderr over the
    train shard bytes to copy, then one over the validation documents (utils/progress.py).
    """
    src, dst = Path(src), Path(dst)
    log = log or (lambda s: None)
    if n_validation < 1:
        raise DataError(f"--n-validation {n_validation}: use 1 or more")
    if n_groups < 1:
        raise DataError(f"--groups {n_groups}: use 1 or more (the benchmark's layout is {N_GROUPS})")
    train = find_shards(src, "train")
    valid = find_shards(src, "validation")
    # An empty file is no gzip stream: counted as 0 documents it would pass silently, and an
    # empty validation shard would shift which documents the evaluation set holds.
    empty = [p.name for p in (*train, *valid) if p.stat().st_size == 0]
    if empty:
        raise DataError(
            f"{src}: {len(empty)} shard(s) are empty (0 bytes): {', '.join(empty[:10])}"
            f"{' ...' if len(empty) > 10 else ''}; delete them and download them again "
            f"(`python -m utils.c4 download --dst {src}` fetches what is missing), then rerun"
        )
    if len(train) % n_groups:
        raise DataError(f"{src}: {len(train)} train shards do not split into {n_groups} equal groups")
    per = len(train) // n_groups
    dst.mkdir(parents=True, exist_ok=True)
    # Whatever a killed run left (any output's temporary, the manifest's included) is removed
    # here, not only the temporaries of outputs this run rebuilds.
    remove_stale_tmp(dst)
    manifest_path = dst / MANIFEST
    old = read_json(manifest_path)
    old = old.get("outputs", {}) if isinstance(old, dict) else {}
    outputs: dict[str, dict] = {}

    jobs = []
    for k in range(n_groups):
        inputs = train[k * per : (k + 1) * per]
        out = dst / group_name(k)
        if _entry_current(old.get(out.name), inputs, out, {}):
            outputs[out.name] = old[out.name]
            log(f"{out.name}: up to date")
        else:
            jobs.append((inputs, out))

    def record(name: str, entry: dict) -> None:
        outputs[name] = entry
        # Rewritten after every output so that an interrupted run keeps what it finished.
        write_json_atomic(manifest_path, {"source": str(src.resolve()), "outputs": _ordered(outputs)})

    todo_bytes = sum(p.stat().st_size for inputs, _ in jobs for p in inputs)
    with Bar(todo_bytes, "train groups", "B", enabled=progress and bool(jobs)) as bar:
        parallel = workers > 1 and len(jobs) > 1
        if parallel:
            from utils.parallel import ordered_map

            # Worker processes cannot move this bar: it moves by a whole group as each one ends.
            results = ordered_map(_build_group, jobs, min(workers, len(jobs)))
        else:
            results = (_build_group(job, bar.update) for job in jobs)
        docs = 0
        for (inputs, out), entry in zip(jobs, results, strict=True):
            if parallel:
                bar.update(sum(p["bytes"] for p in entry["inputs"]))
            docs += entry["documents"]
            bar.set_postfix_str(f"{docs:,} documents")
            record(out.name, entry)
            log(f"{out.name}: {entry['documents']:,} documents from {len(inputs)} shards")

    out = dst / validation_name(n_validation)
    extra = {"documents": n_validation}
    if _entry_current(old.get(out.name), valid, out, extra):
        outputs[out.name] = old[out.name]
        log(f"{out.name}: up to date")
    else:
        with Bar(n_validation, out.name, "documents", enabled=progress) as bar:
            record(out.name, _build_validation(valid, out, n_validation, bar.update))
        log(f"{out.name}: first {n_validation:,} documents of {len(valid)} shards")
    write_json_atomic(manifest_path, {"source": str(src.resolve()), "outputs": _ordered(outputs)})
    return read_json(manifest_path)


def _ordered(outputs: dict) -> dict:
    return dict(sorted(outputs.items()))


def _build_group(job: tuple[list[Path], Path], on_bytes: Callable[[int], None] | None = None) -> dict:
    inputs, out = job
    remove_stale_tmp(out.parent, out.name)
    with atomic_output(out) as tmp, open(tmp, "wb") as f:
        docs, sha = _stream_concat(inputs, f, on_bytes)
    return {"inputs": _inputs_record(inputs), "documents": docs, "bytes": out.stat().st_size, "sha256": sha}


def _build_validation(inputs: list[Path], out: Path, n: int, on_doc: Callable[[int], None] | None = None) -> dict:
    remove_stale_tmp(out.parent, out.name)
    written = 0
    h = hashlib.sha256()
    with atomic_output(out) as tmp:
        with open(tmp, "wb") as raw:
            # mtime=0 and no file name in the header: the same lines always give the same bytes.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                for path in inputs:
                    with LineReader(path) as reader:
                        for line in reader:
                            if not line.endswith(b"\n"):
                                line += b"\n"
                            gz.write(line)
                            written += 1
                            if on_doc is not None:
                                on_doc(1)
                            if written == n:
                                break
                    if written == n:
                        break
        if written < n:
            raise DataError(
                f"the {len(inputs)} validation shards hold only {written:,} documents, fewer than --n-validation {n:,}"
            )
        with open(tmp, "rb") as f:
            while block := f.read(BLOCK):
                h.update(block)
    return {"inputs": _inputs_record(inputs), "documents": n, "bytes": out.stat().st_size, "sha256": h.hexdigest()}


# ----------------------------------------------------------------------------- compress
def compress_one(path: Path, keep: bool = False, level: int = 6) -> Path:
    """Gzip `path` (a .json file) into `path.gz` atomically, then delete `path` unless `keep`.

    The gzip header holds no time or name, so the same input always gives the same bytes.
    """
    out = path.with_name(path.name + ".gz")
    remove_stale_tmp(out.parent, out.name)
    with atomic_output(out) as tmp, open(path, "rb") as src, open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=level) as gz:
            while block := src.read(BLOCK):
                gz.write(block)
    if not keep:
        path.unlink()
    return out


def compress(
    folder: str | Path,
    workers: int = 1,
    keep: bool = False,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
):
    """Gzip every `*.json` file in `folder` (not recursive), `workers` files at a time.

    Each file is written under a temporary name and renamed when complete; its .json is deleted
    only after that (unless `keep`), so an interrupted run is resumed by running it again.
    Returns the paths of the .json.gz files written. `progress`: a bar on stderr over the bytes of
    the .json files, moved as each file is done.
    """
    from concurrent.futures import ThreadPoolExecutor

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(".json"))
    if not files:
        raise DataError(f"{folder}: no .json files to compress")
    log = log or (lambda s: None)
    sizes = [p.stat().st_size for p in files]
    # zlib releases the GIL while it compresses, so threads use the cores.
    with ThreadPoolExecutor(max(1, workers)) as ex, Bar(sum(sizes), "compress", "B", enabled=progress) as bar:
        outs = []
        for out, size in zip(ex.map(lambda p: compress_one(p, keep), files), sizes, strict=True):
            bar.update(size)
            log(f"{out.name}")
            outs.append(out)
    return outs


# ----------------------------------------------------------------------------- CLI
@command
def main(argv: list[str] | None = None) -> int:
    """python -m utils.c4 {download,download-preprocessed,compress,consolidate} ...: see the module docstring."""
    p = argparse.ArgumentParser(
        prog="python -m utils.c4",
        description="C4 en 3.0.1 for the llama31_8b benchmark: download, compress, consolidate.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser(
        "consolidate",
        help="merge the 1024 train shards into 8 files and cut the validation subset",
        description="Concatenate the train shards, in index order, into 8 equal groups "
        "(c4-train.en_{0..7}.json.gz) and write the first N validation documents to "
        "c4-validation-{N}-samples.en.json.gz, with a manifest.json.",
    )
    c.add_argument("--src", required=True, type=Path, help="folder with c4-train.*-of-*.json.gz and c4-validation.*")
    c.add_argument("--dst", required=True, type=Path, help="output folder (MERGED_C4_PATH)")
    c.add_argument("--n-validation", type=int, default=C4_N_VALIDATION, help=f"default {C4_N_VALIDATION}")
    c.add_argument("--groups", type=positive_int, default=N_GROUPS, help=f"train groups (default {N_GROUPS})")
    c.add_argument("--workers", type=positive_int, default=1, help="groups built at a time (default 1)")
    add_flag(c)

    z = sub.add_parser(
        "compress",
        help="gzip every .json file of a folder, in parallel",
        description="Gzip every *.json file in DIR into *.json.gz (atomically, one file per worker at a "
        "time) and delete the .json once its .json.gz is complete. Rerun to resume.",
    )
    z.add_argument("dir", type=Path, help="folder with .json files")
    z.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="files at a time (default: cores)")
    z.add_argument("--keep", action="store_true", help="keep the .json files")
    add_flag(z)

    d = sub.add_parser(
        "download",
        help="download the 1024 train + 8 validation shards of C4 en (resumable)",
        description="Download C4 en 3.0.1 (c4-train.{00000..01023}-of-01024.json.gz, "
        "c4-validation.{00000..00007}-of-00008.json.gz) into DST. Rerunning fetches only what is "
        "missing or incomplete; the end lists any shard still missing. Sources: hf (Hugging Face "
        "dataset allenai/c4, en/), rclone (a remote you configured with `rclone config`; its "
        "credentials stay in rclone's config), local (a folder holding the shards).",
    )
    d.add_argument("--dst", required=True, type=Path, help="output folder (C4_PATH)")
    d.add_argument("--source", choices=("hf", "rclone", "local"), default="hf", help="where from (default hf)")
    d.add_argument("--remote", default=None, help="rclone: REMOTE:PATH of the folder with the shards")
    d.add_argument("--from", dest="from_dir", type=Path, default=None, help="local: folder with the shards")
    d.add_argument("--repo", default="allenai/c4", help="hf: dataset repository (default allenai/c4)")
    d.add_argument("--revision", default=None, help="hf: branch, tag or commit")
    d.add_argument("--workers", type=int, default=8, help="parallel transfers (default 8)")
    d.add_argument(
        "--only",
        choices=("all", "train", "validation"),
        default="all",
        help="which split to fetch (default all)",
    )
    add_flag(d)
    r = sub.add_parser(
        "download-preprocessed",
        help="download the official pre-tokenized C4 (c4-train.en_6 + validation) and tokenizer (resumable)",
        description="Download MLCommons' pre-tokenized C4 of the 8B benchmark (c4-train.en_6 and "
        "c4-validation-91205-samples.en as _text_document.bin/.idx, with their licence files) into "
        "DST, and with --tokenizer-dst the Llama 3.1 tokenizer (without the model weights its data "
        "set also holds). Each file is checked by size and md5 and renamed into place when complete; "
        "a cut download resumes (HTTP Range) and a rerun skips verified files. Behind a Cloudflare "
        "Access login, export CF_ACCESS_TOKEN (the error says how).",
    )
    r.add_argument("--dst", required=True, type=Path, help="output folder (PREPROCESSED_PATH)")
    r.add_argument("--tokenizer-dst", type=Path, default=None, help="also fetch the tokenizer here (TOKENIZER_PATH)")
    r.add_argument(
        "--base-url",
        default=None,
        help="metadata folder holding NAME.uri and NAME.md5 (default: the official MLCommons one)",
    )
    r.add_argument("--retries", type=int, default=3, help="resumes within one run after a cut (default 3)")
    add_flag(r)
    a = p.parse_args(argv)
    try:
        check_env()
        progress = not a.no_progress
        if a.command == "consolidate":
            consolidate(a.src, a.dst, a.n_validation, a.groups, a.workers, log=print, progress=progress)
            print(f"manifest: {a.dst / MANIFEST}")
        elif a.command == "compress":
            outs = compress(a.dir, a.workers, a.keep, log=print, progress=progress)
            print(f"compressed {len(outs)} files in {a.dir}")
        elif a.command == "download":
            if a.source == "rclone":
                if not a.remote:
                    p.error("--source rclone needs --remote REMOTE:PATH")
                source = dl.RcloneSource(a.remote)
            elif a.source == "local":
                if not a.from_dir:
                    p.error("--source local needs --from DIR")
                source = dl.LocalSource(a.from_dir)
            else:
                source = dl.HFSource(a.repo, a.revision)
            names = dl.expected_names()
            if a.only != "all":
                names = [n for n in names if n.startswith(f"c4-{a.only}.")]
            dl.download(source, a.dst, names, a.workers, progress=progress)
        elif a.command == "download-preprocessed":
            from utils import r2

            if a.retries < 0:
                p.error(f"--retries {a.retries}: give 0 or more")
            r2.download_preprocessed(
                a.dst,
                a.tokenizer_dst,
                base_url=a.base_url or r2.DEFAULT_BASE_URL,
                retries=a.retries,
                progress=progress,
            )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: finished outputs are kept, the one in progress was not written "
            "(download-preprocessed resumes it when run again)",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
