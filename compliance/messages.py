"""Turn the official compliance checker's messages into plain-words failures with file lines.

The checker reports in a handful of fixed message shapes (see `mlp_compliance.ComplianceChecker`):
a failed CHECK quotes the key, the official line index and the failed expression; a missing or
repeated key names the key and the count; an ATLEAST_ONE_CHECK names the key and expression. Each
shape is recognised here, the line index is mapped back to the file's line number, and the rule
expression is described in words. Anything unrecognised is passed through verbatim, so no message
is ever lost; the official expression is always kept next to the words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from compliance.mllog_file import Event, MLLogFile
from compliance.rules import SMOKE_DECAY_CHECK, SMOKE_TARGET_CHECK

# How the official eval_accuracy ATLEAST_ONE_CHECK (the target) reads when no eval reached it.
TARGET_NOT_REACHED = "no eval_accuracy reached the target"


@dataclass(frozen=True)
class Failure:
    """One failed rule: what it requires in plain words, and the file line it concerns."""

    rule: str
    line: int | None = None
    origin: str = "official checker"  # or "log file", "run summary", "profile"
    detail: str = ""  # the official expression or message this failure comes from
    file: str = ""  # the log it concerns, where a run has several (the parts of a chained run)

    def format(self) -> str:
        where = f"line {self.line}" if self.line is not None else "whole log"
        if self.file:
            where = f"{self.file} {where}"
        text = f"{where}: {self.rule}"
        if self.detail:
            text += f"  [{self.origin}: {self.detail}]"
        else:
            text += f"  [{self.origin}]"
        return text


# Official rule expressions that read better as fixed words ("{key} ..." is prepended).
_FIXED_WORDS = {
    "s['init_started']": "must come after an init_start",
    "not s['init_stopped']": "must come before init_stop",
    "not s['run_started']": "must come before run_start",
    "( s['init_stopped'] == True )": "must come after init_stop",
    "s['run_started']": "must come after run_start",
    "'status' in v['metadata']": "must carry a 'status' in its metadata",
    "'value' in v": "must carry a value",
    "v['value'] != ''": "must not be empty",
    "('epoch_num' in v['metadata']) | ('samples_count' in v['metadata'])": (
        "must carry samples_count (or epoch_num) in its metadata"
    ),
    "('first_epoch_num' in v['metadata']) | ('samples_count' in v['metadata'])": (
        "must carry samples_count (or first_epoch_num) in its metadata"
    ),
    "'samples_count' in v['metadata']": "must carry samples_count in its metadata",
    "v['metadata']['samples_count'] >= 0 if 'samples_count' in v['metadata'] else True": (
        "must have samples_count >= 0"
    ),
    "is_integer(v['value'])": "must be an integer",
    "is_integer(v['value']) and v['value'] >= 1": "must be an integer of at least 1",
    "v['value'] == 1_200_000 - s['opt_learning_rate_warmup_steps']": (
        "must equal 1,200,000 - opt_learning_rate_warmup_steps"
    ),
}
_INIT_LIMIT_TEST = "ll.timestamp - s['first_init_start'] < (s['compile_time_mins']*60*1e3)"

_CHECK_FAILED = re.compile(
    r"^CHECK for '(?P<key>.*?)' failed in line (?P<index>\d+):\n(?P<line>.*?)\nfailed test: (?P<test>.*?)"
    r"\ncurrent context",
    re.S,
)
_CHECK_ERROR = re.compile(
    r"^Failed executing CHECK code:\n(?P<test>.*?)\ntriggered by line:\n(?P<line>.*?)\ncurrent context", re.S
)
_END_ERROR = re.compile(r"^Failed executing CHECK code:\n(?P<test>.*?)\ncurrent context", re.S)
_END_FAILED = re.compile(r"^failed test: (?P<test>.*?)\ncurrent context", re.S)
_EXEC_ERROR = re.compile(r"^Failed executing code (?P<action>\w+) code triggered by line :\n(?P<line>.*)", re.S)
_AT_LEAST_ONE_CHECK = re.compile(r"^Failed checks for (?P<key>\S+) : (?P<test>.*)$", re.S)
_EXACTLY_ONE = re.compile(
    r"^Required EXACTLY_ONE occurrence of '(?P<key>.*?)' but found (?P<n>\d+)"
    r"(?: with different values: (?P<values>.*))?$",
    re.S,
)
_AT_LEAST = re.compile(
    r"^Required AT_LEAST(?:_ONE|\((?P<min>\d+)\)) occurrence of '(?P<key>[^']*)' but found (?P<n>\d+)$"
)
_ONE_OF = re.compile(r"^Required AT_LEAST_ONE occurrence of (?P<alts>'.*')$")


def translate(key: str | None, message: str, log: MLLogFile, target: float | None) -> Failure:
    """One official checker message -> a Failure in plain words with the file line."""
    m = _CHECK_FAILED.match(message)
    if m:
        test = m["test"].strip()
        line = log.lineno_of_index(int(m["index"]))
        event = _event_at(log, line)
        return Failure(f"{m['key']} {_describe(test, event, log)}", line, detail=test)
    m = _CHECK_ERROR.match(message)
    if m:
        line = log.lineno_of_text(m["line"])
        test = m["test"].strip()
        return Failure(
            f"{key or 'this line'} could not be checked: the official rule raised an error on it",
            line,
            detail=test,
        )
    m = _EXEC_ERROR.match(message)
    if m:
        line = log.lineno_of_text(m["line"])
        return Failure(
            f"{key or 'this line'} could not be processed: the official rule's {m['action']} code "
            "raised an error on it",
            line,
            detail=f"{m['action']} code failed",
        )
    m = _AT_LEAST_ONE_CHECK.match(message)
    if m:
        return _at_least_one_check(m["key"], m["test"].strip(), log, target)
    m = _EXACTLY_ONE.match(message)
    if m:
        return _exactly_one(m["key"], int(m["n"]), m["values"], log, message)
    m = _AT_LEAST.match(message)
    if m:
        needed = int(m["min"]) if m["min"] else 1
        return Failure(
            f"{m['key']} must appear at least {_times(needed)}; found {m['n']}",
            _missing_line(m["key"], log),
            detail=message,
        )
    m = _ONE_OF.match(message)
    if m:
        return Failure(f"at least one of {m['alts']} must appear; found none", None, detail=message)
    m = _END_FAILED.match(message)
    if m:
        return _end_check(m["test"].strip(), log)
    m = _END_ERROR.match(message)
    if m:
        return Failure("an end-of-log check could not be evaluated", None, detail=m["test"].strip())
    if message.startswith("Log lines had parsing errors"):
        return Failure("some :::MLLOG lines could not be parsed (listed with their lines above)", None, detail=message)
    if message.startswith("No log lines detected"):
        return Failure("the file has no :::MLLOG lines", None, detail=message)
    return Failure(message.splitlines()[0] if message else "unexplained failure", None, detail=message)


def warning_text(message: str, log: MLLogFile) -> tuple[str, str | None, int | None]:
    """An official warning in words: (text, key, line of the repeat) for EXACTLY_ONE repeats."""
    m = _EXACTLY_ONE.match(message)
    if not m:
        return message, None, None
    lines = [e.lineno for e in log.of(m["key"])]
    text = (
        f"{m['key']} appears {m['n']} times with the same value (lines {_join(lines)}); the rules ask for exactly one"
    )
    return text, m["key"], (lines[1] if len(lines) > 1 else None)


def _describe(test: str, event: Event | None, log: MLLogFile) -> str:
    value = event.value if event is not None else None
    # Quote the logged value only where the rule is about it.
    has = f" (the log has {value!r})" if event is not None and "v['value']" in test else ""
    if test in _FIXED_WORDS:
        return _FIXED_WORDS[test] + has
    if test == _INIT_LIMIT_TEST:
        start = log.first("init_start")
        took = ""
        if event is not None and start is not None:
            took = f"; here it took {(event.time_ms - start.time_ms) / 60000:.1f} min"
        return f"must come within the division's init time limit of the first init_start{took}"
    m = re.fullmatch(r"v\['value'\] == (.+)", test)
    if m:
        return f"must be {m[1]}{has}"
    m = re.fullmatch(r"v\['value'\] in \[(.*)\]", test)
    if m:
        return f"must be one of {m[1]}{has}"
    m = re.fullmatch(r"v\['value'\] (>=|>|<=|<) (.+)", test)
    if m:
        return f"must be {m[1]} {m[2]}{has}"
    return f"fails the official test `{test}`{has}"


def _at_least_one_check(key: str, test: str, log: MLLogFile, target: float | None) -> Failure:
    if key == "eval_accuracy":
        evals = log.of("eval_accuracy")
        goal = f"<= {target:g}" if target is not None else "at or under the target"
        if test == SMOKE_TARGET_CHECK and target is None:
            goal = "<= the log's target_accuracy (which is missing)"
        best = min(evals, key=lambda e: e.value) if evals else None
        rule = f"{TARGET_NOT_REACHED} ({goal})"
        if best is not None:
            rule += (
                f"; best was {best.value:g} at samples_count "
                f"{best.metadata.get('samples_count', '?')} (line {best.lineno})"
            )
        return Failure(rule, evals[-1].lineno if evals else None, detail=test)
    return Failure(f"no {key} line satisfies the official test", None, detail=test)


def _exactly_one(key: str, found: int, values: str | None, log: MLLogFile, message: str) -> Failure:
    events = log.of(key)
    if found == 0:
        return Failure(f"{key} is missing (required exactly once)", _missing_line(key, log), detail=message)
    lines = _join([e.lineno for e in events])
    rule = f"{key} must appear exactly once; found {found} (lines {lines})"
    if values:
        rule += f" with different values {values}"
    return Failure(rule, events[1].lineno if len(events) > 1 else None, detail=message)


def _end_check(test: str, log: MLLogFile) -> Failure:
    if test == SMOKE_DECAY_CHECK:
        decay, steps, warmup = (
            log.first(k) for k in ("opt_learning_rate_decay_steps", "max_steps", "opt_learning_rate_warmup_steps")
        )
        have = ", ".join(f"{e.key} {e.value!r}" for e in (decay, steps, warmup) if e is not None)
        return Failure(
            f"opt_learning_rate_decay_steps must equal max_steps - opt_learning_rate_warmup_steps (the log has {have})",
            decay.lineno if decay else None,
            detail=test,
        )
    return Failure("an end-of-log check failed", None, detail=test)


def _missing_line(key: str, log: MLLogFile) -> int | None:
    # A missing run_stop is noticed at the end of the log: point there.
    if key == "run_stop" and log.parser_linenos:
        return log.parser_linenos[-1]
    return None


def _event_at(log: MLLogFile, line: int | None) -> Event | None:
    for event in log.events:
        if event.lineno == line:
            return event
    return None


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _join(items: list[Any]) -> str:
    return ", ".join(str(i) for i in items)
