"""Progress of the long-running data and conversion tools, on stderr, the same way for every tool.

How a tool reports, decided once per run from its `--no-progress` flag and the PROGRESS variable:
- off: `--no-progress` or PROGRESS=0: nothing is written.
- bar: stderr is a terminal (or PROGRESS=1 forces it anywhere): a tqdm bar redrawn in place.
- lines: stderr is not a terminal (a Slurm log, a pipe, a file) and PROGRESS is unset or `auto`:
  one plain line every LINE_INTERVAL_S seconds and a last one when the work ends, so a log file
  shows how far a run got without tqdm's carriage-return redraws.
Bars and lines go to stderr only; stdout keeps the tools' results, which never depend on the mode.
"""

from __future__ import annotations

import os
import sys
import time

from utils.errors import DataError

ENV = "PROGRESS"
# A Slurm log of a multi-hour download gets about one line a minute per bar.
LINE_INTERVAL_S = 60.0

_OFF = ("0", "off", "no", "false")
_FORCE = ("1", "on", "yes", "true")
_AUTO = ("", "auto")


def mode(enabled: bool = True, stream=None) -> str:
    """'off', 'bar' or 'lines' for a tool whose flag says `enabled` (False: --no-progress)."""
    value = os.environ.get(ENV, "").strip().lower()
    if value not in _OFF + _FORCE + _AUTO:
        raise DataError(
            f"PROGRESS={os.environ[ENV]!r}: use 0 (no progress), 1 (tqdm bars even when stderr is not a "
            f"terminal) or auto (the default: bars on a terminal, a plain line a minute otherwise)"
        )
    if not enabled or value in _OFF:
        return "off"
    if value in _FORCE:
        return "bar"
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    try:
        return "bar" if isatty is not None and isatty() else "lines"
    except ValueError:  # a closed stream
        return "off"


def check_env() -> None:
    """Raise DataError for a bad PROGRESS value before a tool starts its work."""
    mode(True)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Bar:
    """A progress counter with tqdm's small interface (update, n, set_postfix_str, close).

    unit "B" counts bytes (shown in KiB/MiB/GiB, the exact count in plain lines); any other unit is
    a plain count ("documents", "tensors", "shards"). total=None when the end is not known.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "B",
        *,
        initial: int = 0,
        enabled: bool = True,
        interval: float = LINE_INTERVAL_S,
        stream=None,
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.mode = mode(enabled, self.stream)
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._initial = initial
        self.interval = interval
        self._postfix = ""
        self._t0 = self._last = time.monotonic()
        self._closed = False
        self._tqdm = None
        if self.mode == "bar":
            from tqdm import tqdm

            is_bytes = unit == "B"
            self._tqdm = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                unit_scale=is_bytes,
                unit_divisor=1024 if is_bytes else 1000,
                file=self.stream,
                dynamic_ncols=True,
                mininterval=0.5,
                leave=True,
            )

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        elif self.mode == "lines":
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                self._line()

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        self._postfix = text
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(text, refresh=refresh)

    def describe(self) -> str:
        """The plain line: name, share of the total, count, elapsed time, rate."""
        elapsed = time.monotonic() - self._t0
        done = self.n - self._initial
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.unit == "B":
            count = f"{self.n:,} bytes ({_size(self.n)})"
            if self.total is not None:
                count = f"{self.n:,} of {self.total:,} bytes ({_size(self.n)} of {_size(self.total)})"
            speed = f"{_size(rate)}/s"
        else:
            count = f"{self.n:,} {self.unit}" if self.total is None else f"{self.n:,} of {self.total:,} {self.unit}"
            speed = f"{rate:,.1f} {self.unit}/s"
        share = f" {100 * self.n // self.total}%" if self.total else (" 100%" if self.total == 0 else "")
        text = f"{self.desc}:{share} {count}, {_clock(elapsed)} elapsed, {speed}"
        return f"{text}, {self._postfix}" if self._postfix else text

    def _line(self) -> None:
        try:
            print(self.describe(), file=self.stream, flush=True)
        except (OSError, ValueError):
            self.mode = "off"  # a log that went away must not stop the work

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.mode == "lines":
            self._line()

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def add_flag(parser) -> None:
    """The `--no-progress` flag every tool takes, with the same help."""
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress on stderr (also PROGRESS=0); by default a bar on a terminal, else a plain "
        "line a minute; PROGRESS=1 forces bars",
    )
