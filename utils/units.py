"""Cutting a JSON-lines file into units of work that worker processes read by themselves.

With many workers, one process that inflates the input, hands every line to the workers through
pipes and takes every token back becomes the limit (at 64 workers it held utils.tokenize to about
0.7 of what the machine's cores could encode; docs/DATA.md). Here the reading process only plans:
it streams through the file once, inflating but keeping nothing, and emits for each unit of about
`unit_bytes` of text where a worker can find it:

  RangeUnit: the lines of text [lo, hi) of the stream that starts at byte `start` of the file.
    `start` is the start of a gzip member (members are independent streams, so inflating may begin
    there) or, for a plain file, 0 and the worker seeks to `lo` directly. The worker inflates from
    `start` and drops the first `lo` bytes of text: inflating costs well under 1% of encoding the
    same text, so skipping some tens of MB in front of a unit is cheap. C4's consolidated files are
    128 shards back to back, one or more gzip members each, so `lo` stays within one shard.
  TextUnit: the lines themselves, for text more than `max_skip` bytes past the last member start
    (a file compressed as one huge member): there, re-inflating in front of every unit would cost
    more than shipping the text, which is then done as before.

Units are cut right after a newline, so each holds whole lines; `first_line` is the file's line
number of its first line. A line may run across a member boundary (a member whose text does not
end with a newline); units then span members, as the stream does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from utils.fileio import GZIP_ERRORS, DataError, is_gzip, text_stream

# Past this much text after the last member start, ship text instead of re-inflating (module doc).
MAX_SKIP = 1 << 30


@dataclass(frozen=True)
class RangeUnit:
    first_line: int
    start: int  # file offset where reading begins (a gzip member's start)
    lo: int  # text offset, from `start`, of the unit's first line
    hi: int  # text offset just past its last line
    end_pos: int  # how far into the file the planner had read when it cut this unit (progress)


@dataclass(frozen=True)
class TextUnit:
    first_line: int
    block: bytes  # whole lines, back to back
    end_pos: int


def gzip_error(path: Path, line: int, e: BaseException) -> DataError:
    return DataError(
        f"{path}: the gzip stream is truncated or corrupt after line {line - 1} ({e}); download or rebuild this file"
    )


def plan_units(
    path: Path, unit_bytes: int, block_bytes: int, max_skip: int = MAX_SKIP, ranges: bool = True
) -> Iterator[RangeUnit | TextUnit]:
    """The units of `path`, in file order, covering every line once (module docstring).

    RangeUnits of about `unit_bytes` of text; TextUnits of about `block_bytes` once more than
    `max_skip` bytes of text lie between the last member start and the next unit. With `ranges`
    False, only TextUnits (for encoding in this process, where shipping costs nothing).
    """
    gz = is_gzip(path)
    base = 0  # file offset the current stream of range units starts at: a member start
    off = lo = 0  # text offset (from base) read so far, and where the pending unit begins
    line = 1  # the pending unit's first line
    newlines = 0  # newlines in the pending unit so far
    shipping = not ranges  # cutting TextUnits
    pending: list[bytes] = []  # while shipping: the pending unit's text
    ends_line = True  # the text read so far ends with a newline
    with open(path, "rb") as f:
        try:
            for member, data in text_stream(f, gz):
                if member is not None and ranges:
                    if off > lo and lo > 0 and ends_line:
                        # End the pending unit with the previous member, so that the next units
                        # count their text from this member start, the nearest one. (A unit
                        # that starts at its stream's start costs no skipping: it may go on
                        # over small members.)
                        if shipping:
                            yield TextUnit(line, b"".join(pending), f.tell())
                            pending = []
                        else:
                            yield RangeUnit(line, base, lo, off, f.tell())
                        line, lo, newlines = line + newlines, off, 0
                    if off == lo:
                        base, off, lo, shipping = member, 0, 0, False
                if not data:
                    continue
                ends_line = data.endswith(b"\n")
                start, off = off, off + len(data)
                j = 0  # where in `data` the pending unit's part of it begins
                # Cut right after the first newline at which the pending unit has its size.
                while (need := lo + (block_bytes if shipping else unit_bytes) - start) <= len(data):
                    cut = data.find(b"\n", max(need - 1, j)) + 1
                    if cut == 0:
                        break
                    hi = start + cut
                    newlines += data.count(b"\n", j, cut)
                    if shipping:
                        yield TextUnit(line, b"".join([*pending, data[j:cut]]), f.tell())
                        pending = []
                    else:
                        yield RangeUnit(line, base, lo, hi, f.tell())
                        shipping = hi > max_skip
                    line, lo, newlines, j = line + newlines, hi, 0, cut
                newlines += data.count(b"\n", j)
                if shipping and j < len(data):
                    pending.append(data[j:])
        except GZIP_ERRORS as e:
            raise gzip_error(path, line + newlines, e) from None
        if off > lo:  # the rest; the file's last line may lack its newline
            yield TextUnit(line, b"".join(pending), f.tell()) if shipping else RangeUnit(line, base, lo, off, f.tell())


def unit_blocks(path: Path, unit: RangeUnit, block_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(number of its first line, whole lines back to back) in blocks of about `block_bytes`,
    for the lines of a RangeUnit: what a worker encodes, block by block, to keep its memory small."""
    line = unit.first_line
    pending: list[bytes] = []  # text of the unit not yet handed out
    size = 0
    for data in _unit_text(path, unit):
        size += len(data)
        j = 0
        while (need := block_bytes - (size - len(data))) <= len(data):
            cut = data.find(b"\n", max(need - 1, j)) + 1
            if cut == 0:
                break
            block = b"".join([*pending, data[j:cut]])
            yield line, block
            line += block.count(b"\n")
            pending, j, size = [], cut, len(data) - cut
        if j < len(data):
            pending.append(data[j:])
    if pending:
        yield line, b"".join(pending)


def _unit_text(path: Path, unit: RangeUnit) -> Iterator[bytes]:
    """The text [lo, hi) of a RangeUnit's stream, in pieces."""
    gz = is_gzip(path)
    with open(path, "rb") as f:
        f.seek(unit.start if gz else unit.start + unit.lo)
        pos = 0 if gz else unit.lo  # text offset (from unit.start) of the next piece
        try:
            for member, data in text_stream(f, gz):
                if member is not None:
                    continue
                first, pos = pos, pos + len(data)
                if pos > unit.lo:
                    yield data[max(unit.lo - first, 0) : unit.hi - first]
                if pos >= unit.hi:
                    return
        except GZIP_ERRORS as e:
            raise gzip_error(path, unit.first_line, e) from None
    raise DataError(
        f"{path}: the file changed while it was read (its text from byte {unit.start} ends before offset {unit.hi})"
    )
