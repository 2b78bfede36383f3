"""File helpers shared by the data tools: atomic outputs, line readers with precise errors, hashes.

Every tool in `utils/` writes its outputs under a temporary name in the destination folder and
renames them into place only when they are complete, so an interrupted run never leaves a partial
file under a final name and a rerun simply starts that output again.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

# Reading .gz inputs goes through ISA-L (python-isal), whose inflate is about 3x zlib's, on a
# thread of its own (igzip_threaded; inflate releases the GIL): in utils.tokenize one process reads
# for every worker, and at 32 or more workers that process was what limited the throughput
# (docs/DATA.md). Same bytes and the same gzip errors as the standard library's gzip.
from isal import igzip_threaded, isal_zlib

# DataError is defined with the command-line error handling; the tools import it from here too.
from utils.errors import DataError, with_path

# What a truncated or corrupt gzip stream raises through igzip or isal_zlib.
GZIP_ERRORS = (EOFError, isal_zlib.error, gzip.BadGzipFile)

# Read and hash in large blocks: the inputs are files of hundreds of MB to tens of GB.
BLOCK = 1 << 22


def tmp_path(path: Path) -> Path:
    """The temporary name an output is written under before its rename: hidden, same folder
    (so the rename is atomic), tagged with the process id (so two runs never share one)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path for `path`; rename it into place on success, delete it on failure.

    The file is fsync'd before the rename so a crash right after never exposes an empty file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        # OSError, not only FileNotFoundError: on a read-only file system the unlink fails too,
        # and that must not hide the error that stopped the write.
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            # A failed write() names no file: name the output, so the message says where.
            raise with_path(e, path, tmp) from None
        raise


def remove_stale_tmp(folder: Path, name: str = "*") -> None:
    """Delete temporaries of `name` (of every output with "*") left in `folder` by killed runs:
    files or folders `.NAME.tmp-PID` whose process is gone. A killed run cannot clean up after
    itself, so each run clears what dead ones left before it writes."""
    for stale in Path(folder).glob(f".{name}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write `obj` as indented JSON (keys in insertion order, newline-terminated) atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike):
    """The parsed JSON at `path`, or None when the file is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def is_gzip(path: str | os.PathLike) -> bool:
    """Whether the file name says gzip (C4's shards and merged files all end in .gz)."""
    return str(path).endswith(".gz")


def iter_raw_lines(path: str | os.PathLike) -> Iterator[bytes]:
    """The lines of a JSON-lines file (gzip'd when the name ends in .gz), as bytes with the
    trailing newline. A truncated or corrupt gzip stream raises DataError naming the file."""
    with LineReader(path) as reader:
        yield from reader


def count_lines_gz_bytes(chunks: Iterator[bytes], name: str) -> int:
    """Count newline-terminated lines in a stream of gzip bytes (possibly several gzip members),
    checking that the stream decompresses completely. Raises DataError naming `name` otherwise."""
    lines = 0
    d = isal_zlib.decompressobj(wbits=31)
    in_member = False  # bytes of an unfinished gzip member have been fed
    try:
        for chunk in chunks:
            while chunk:
                in_member = True
                lines += d.decompress(chunk).count(b"\n")
                if d.eof:
                    # A gzip member ended; the rest of this chunk starts the next member.
                    chunk = d.unused_data
                    d = isal_zlib.decompressobj(wbits=31)
                    in_member = False
                else:
                    chunk = b""
    except isal_zlib.error as e:
        raise DataError(f"{name}: the gzip stream is corrupt ({e}); download or rebuild this file") from None
    if in_member:
        raise DataError(f"{name}: the gzip stream is truncated; download or rebuild this file")
    return lines


def split_lines(block: bytes) -> list[bytes]:
    """The lines of a block from `LineReader.blocks`, without their newlines."""
    lines = block.split(b"\n")
    if lines[-1] == b"":  # the block ends with a newline (all but maybe the file's last one)
        lines.pop()
    return lines


class LineReader:
    """Iterate the lines of a JSON-lines file (gzip'd when the name ends in .gz) as bytes.

    `position()` is how far into the file on disk reading has got (compressed bytes for .gz),
    for progress bars. `lines_read` counts the lines yielded. A truncated or corrupt gzip stream
    raises DataError naming the file and the last good line.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._raw = open(self.path, "rb")
        except FileNotFoundError:
            raise DataError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise DataError(f"{self.path}: is a folder, expected a .json or .json.gz file") from None
        self._f = igzip_threaded.open(self._raw, "rb", threads=1) if is_gzip(self.path) else self._raw
        self.lines_read = 0

    def position(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        self._f.close()
        self._raw.close()

    def __enter__(self) -> LineReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _gzip_error(self, e: BaseException) -> DataError:
        return DataError(
            f"{self.path}: the gzip stream is truncated or corrupt after line {self.lines_read} "
            f"({e}); download or rebuild this file"
        )

    def blocks(self, size: int) -> Iterator[tuple[int, bytes]]:
        """(number of its first line, whole lines back to back) in blocks of about `size` bytes.

        For a reader that hands lines on to other processes: the lines are cut apart by whoever
        receives a block (`split_lines`), so this loop costs a few C calls per block rather than
        Python work per line. The last line of the file may lack its newline.
        """
        first = 1
        carry: list[bytes] = []  # the start of a line that has not ended yet
        try:
            while data := self._f.read(size):
                cut = data.rfind(b"\n") + 1
                if cut == 0:  # no line ends in this read: a line longer than `size`
                    carry.append(data)
                    continue
                block = b"".join([*carry, data[:cut]]) if carry else data[:cut]
                carry = [data[cut:]] if cut < len(data) else []
                lines = block.count(b"\n")
                yield first, block
                first += lines
                self.lines_read += lines
            if carry:
                self.lines_read += 1
                yield first, b"".join(carry)
        except GZIP_ERRORS as e:
            raise self._gzip_error(e) from None

    def __iter__(self) -> Iterator[bytes]:
        try:
            for line in self._f:
                self.lines_read += 1
                yield line
        except GZIP_ERRORS as e:
            raise self._gzip_error(e) from None
