"""Read an MLPerf log (`:::MLLOG {json}` lines) without ever raising on its content.

The official parser (`mlperf_logging.compliance_checker.mlp_parser`) numbers lines by their
position among the `:::MLLOG` lines only, and it raises on some malformed lines (a JSON value that
is not an object, a missing `time_ms`). This reader walks the file the same way the official
parser does (latin-1, universal newlines, the same prefix stripping), so it can

* map the official parser's line index back to the line number in the file,
* describe every unreadable line with its file line number, and
* hand the official parser a copy of the lines in which each unreadable line is replaced by a
  stand-in that it records as a parse error instead of crashing on.

Nothing here decides whether a log complies; that is the official checker's job.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOKEN = ":::MLLOG "
# The official parser keeps everything from the last token on (rank prefixes such as "0: " go).
_PREFIX = re.compile(".*" + TOKEN)
# Fields every line written by mlperf_logging.mllog carries; the official parser indexes them.
_REQUIRED_FIELDS = ("time_ms", "key", "value", "metadata")
# Not valid JSON, so the official parser files it under "parsing errors" and moves on.
_STAND_IN = TOKEN + "<line withheld: unreadable, see the line report>"
# Keys whose value the official rules compare with numbers in code that is not guarded against
# exceptions (eval_accuracy's ATLEAST_ONE_CHECK), so a non-numeric value would stop the checker.
_NUMERIC_VALUE_KEYS = ("eval_accuracy",)


@dataclass(frozen=True)
class Event:
    """One readable `:::MLLOG` line."""

    lineno: int  # 1-based line number in the file
    key: str
    value: Any
    metadata: dict
    time_ms: float
    event_type: str | None


@dataclass(frozen=True)
class LineProblem:
    """An `:::MLLOG` line that cannot be read, with the reason in plain words."""

    lineno: int
    message: str


@dataclass
class MLLogFile:
    """The readable events of a log plus what the official parser needs to see."""

    path: Path
    events: list[Event] = field(default_factory=list)
    problems: list[LineProblem] = field(default_factory=list)
    # One entry per `:::MLLOG` line, in order, exactly as the official parser would see it, except
    # that unreadable lines are replaced by a stand-in (see module docstring).
    parser_lines: list[str] = field(default_factory=list)
    # File line number (1-based) of each parser_lines entry: the official line index -> file line.
    parser_linenos: list[int] = field(default_factory=list)
    line_count: int = 0

    def of(self, key: str) -> list[Event]:
        """All events with this key, in file order."""
        return [e for e in self.events if e.key == key]

    def first(self, key: str) -> Event | None:
        """The first event with this key, or None."""
        for event in self.events:
            if event.key == key:
                return event
        return None

    def lineno_of_index(self, index: int) -> int | None:
        """File line number of the official parser's 0-based line index."""
        if 0 <= index < len(self.parser_linenos):
            return self.parser_linenos[index]
        return None

    def lineno_of_text(self, text: str) -> int | None:
        """File line number of a line the official checker quotes back verbatim."""
        text = text.strip()
        for lineno, line in zip(self.parser_linenos, self.parser_lines, strict=True):
            if line == text:
                return lineno
        return None


class LogReadError(Exception):
    """The file itself cannot be opened or read (missing, a folder, no permission)."""


def read_mllog(path: str | Path) -> MLLogFile:
    """Read every `:::MLLOG` line of `path`; unreadable lines become LineProblems."""
    path = Path(path)
    log = MLLogFile(path=path)
    try:
        # Same decoding and line splitting as the official parser, so line indices agree.
        with open(path, encoding="latin-1") as f:
            raw_lines = list(f)
    except OSError as err:
        raise LogReadError(f"{path}: cannot read the file ({err.strerror or err})") from err
    log.line_count = len(raw_lines)
    for lineno, raw in enumerate(raw_lines, start=1):
        if TOKEN not in raw:
            continue
        text = _PREFIX.sub(TOKEN, raw).strip()
        is_last_unterminated = lineno == len(raw_lines) and not raw.endswith(("\n", "\r"))
        event, problem = _parse(lineno, text, is_last_unterminated)
        log.parser_linenos.append(lineno)
        if problem is not None:
            log.problems.append(problem)
            log.parser_lines.append(_STAND_IN)
        else:
            log.events.append(event)
            log.parser_lines.append(text)
    return log


def _parse(lineno: int, text: str, is_last_unterminated: bool) -> tuple[Event | None, LineProblem | None]:
    body = text[len(TOKEN) :]
    try:
        record = json.loads(body)
    except json.JSONDecodeError as err:
        if is_last_unterminated:
            why = "the file ends in the middle of this :::MLLOG line (truncated; was the run killed?)"
        elif err.pos >= len(body.rstrip()):
            why = "this :::MLLOG line's JSON ends early (truncated line)"
        else:
            why = f"this :::MLLOG line is not valid JSON ({err.msg}, at character {err.pos + 1} of the JSON)"
        return None, LineProblem(lineno, why)
    if not isinstance(record, dict):
        return None, LineProblem(lineno, f"this :::MLLOG line holds a JSON {type(record).__name__}, not an object")
    missing = [name for name in _REQUIRED_FIELDS if name not in record]
    if missing:
        names = ", ".join(f"'{name}'" for name in missing)
        return None, LineProblem(lineno, f"this :::MLLOG line lacks the field(s) {names}")
    key, metadata = record["key"], record["metadata"]
    if not isinstance(key, str):
        return None, LineProblem(lineno, f"this :::MLLOG line's 'key' is not a string: {key!r}")
    if not isinstance(metadata, dict):
        return None, LineProblem(lineno, f"'{key}': its 'metadata' is not a JSON object: {metadata!r}")
    try:
        time_ms = float(record["time_ms"])
    except (TypeError, ValueError):
        return None, LineProblem(lineno, f"'{key}': its 'time_ms' is not a number: {record['time_ms']!r}")
    value = record["value"]
    if key in _NUMERIC_VALUE_KEYS and not _is_number(value):
        return None, LineProblem(lineno, f"'{key}': its value is not a number: {value!r}")
    return Event(lineno, key, value, metadata, time_ms, record.get("event_type")), None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
