"""Check one llama31_8b MLPerf log with the official checker and summarize the run.

`check_log` is the library entry (the benchmark's end-of-run summary calls it through
`compliance.check`); `python -m compliance.check LOG` is the command line.

Pass/fail comes from three sources, each named in the report:

* the official `mlperf_logging` compliance checker, on the official rules (profile ``closed``)
  or on the relaxed copy (profile ``smoke``, see `compliance.rules`);
* the log file itself: every `:::MLLOG` line must be readable;
* the run summary: `run_stop` must say `success` (the official rules accept `aborted`, but such a
  run does not count), the log must be a closed-division llama31_8b log, and the keys the time to
  train is computed from (`run_start`, `run_stop`, `init_stop`) must not repeat (the official
  checker only warns when a repeat carries the same value).

Not for concurrent use from several threads: the official checker keeps a module-level queue of rule
files, and its logging is captured by swapping the root logger's handlers for the duration of a call.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from compliance.messages import Failure, translate, warning_text
from compliance.mllog_file import LogReadError, MLLogFile, read_mllog
from compliance.rules import (
    BENCHMARK,
    DEFAULT_PROFILE,
    DEFAULT_RULESET,
    PROFILES,
    RULESETS,
    SMOKE_RELAXATIONS,
    RelaxedRule,
    RulesetError,
    official_target,
    rule_files,
    run_official_checker,
)

# Closed-division limit from first init_start to init_stop. Shown in the summary only: whether a
# log keeps it is decided by the official rule (common.yaml, compile_time_mins).
INIT_LIMIT_MS = 30 * 60 * 1000
# The result summarizer scores run_stop.time_ms - run_start.time_ms: it must not be negative.
NEGATIVE_TIME_RULE = "run_stop must not come before run_start in time (time to train = run_stop - run_start)"
# Repeats of these keys make the time to train ambiguous, so the official warning becomes a failure.
_MUST_BE_UNIQUE = ("init_stop", "run_start", "run_stop")
# tracked_stats value names read as a train step time, with the factor to seconds.
_STEP_TIME_NAMES = (
    ("train_step_time_ms", 1e-3),
    ("step_time_ms", 1e-3),
    ("train_step_time", 1.0),
    ("step_time", 1.0),
)
_LOSS_NAMES = ("train_loss", "loss")
# Hyperparameter keys shown in reports (with the line each was logged on).
SUMMARY_KEYS = (
    "submission_benchmark",
    "submission_division",
    "submission_org",
    "submission_platform",
    "seed",
    "global_batch_size",
    "gradient_accumulation_steps",
    "max_sequence_length",
    "eval_samples",
    "opt_base_learning_rate",
    "opt_learning_rate_warmup_steps",
    "opt_learning_rate_decay_steps",
    "max_steps",
    "target_accuracy",
)


@dataclass(frozen=True)
class StepTime:
    """Train step time read from optional `tracked_stats` events."""

    events: int
    median_s: float
    mean_s: float
    source: str  # the tracked_stats value it was read from


@dataclass
class LogReport:
    """Everything `check_log` found out about one log."""

    path: str
    ruleset: str
    profile: str
    passed: bool = False
    status: str | None = None  # run_stop's metadata status
    time_to_train_ms: float | None = None  # run_stop - run_start
    init_time_ms: float | None = None  # first init_start -> init_stop
    init_limit_ms: float = INIT_LIMIT_MS
    init_within_limit: bool | None = None
    samples_count: int | None = None  # samples_count of the last eval_accuracy
    converged: bool = False  # some eval_accuracy at or under target_accuracy
    global_batch_size: int | None = None
    steps: int | None = None  # samples_count / global_batch_size when it divides
    eval_curve: list[tuple[int, float]] = field(default_factory=list)  # (samples_count, eval_accuracy)
    target_accuracy: float | None = None  # the target the profile checks against
    step_time: StepTime | None = None
    train_loss: float | None = None  # last train loss in tracked_stats
    failures: list[Failure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    relaxed_rules: list[RelaxedRule] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # what was checked, in words
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    key_lines: dict[str, int] = field(default_factory=dict)  # first file line of each key
    official_messages: list[str] = field(default_factory=list)  # the checker's raw text

    @property
    def benchmark(self) -> Any:
        return self.hyperparameters.get("submission_benchmark")

    @property
    def time_to_train_min(self) -> float | None:
        return None if self.time_to_train_ms is None else self.time_to_train_ms / 60_000

    def headline(self) -> str:
        """One line: verdict, status, time to train, samples and steps at the last eval."""
        parts = ["PASSED" if self.passed else f"FAILED ({len(self.failures)})", f"status {self.status or 'n/a'}"]
        if self.time_to_train_min is not None:
            parts.append(f"time to train {duration_text(self.time_to_train_min)}")
        if self.samples_count is not None:
            steps = f" ({self.steps:,} steps)" if self.steps is not None else ""
            parts.append(f"{self.samples_count:,} samples{steps}")
        return ", ".join(parts)

    def format(self, verbose: bool = False) -> str:
        """A readable multi-line summary; `verbose` adds the official checker's raw messages."""
        out = [
            f"MLPerf log: {self.path}",
            f"  result:        {'PASSED' if self.passed else f'FAILED ({len(self.failures)} failure(s))'}",
            f"  profile:       {self.profile} (ruleset training {self.ruleset}, {BENCHMARK})",
            f"  status:        {self.status if self.status is not None else 'n/a (no run_stop status)'}",
        ]
        if self.time_to_train_ms is not None:
            out.append(
                f"  time to train: {_ms(self.time_to_train_ms)} ms = {duration_text(self.time_to_train_min)} "
                f"(run_stop - run_start)"
            )
        else:
            out.append("  time to train: n/a (needs one run_start and one run_stop)")
        if self.init_time_ms is not None:
            within = "within" if self.init_within_limit else "OVER"
            out.append(
                f"  init time:     {_ms(self.init_time_ms)} ms = {self.init_time_ms / 60_000:.2f} min, "
                f"{within} the {self.init_limit_ms / 60_000:.0f}-min limit"
            )
        else:
            out.append("  init time:     n/a (needs init_start and init_stop)")
        if self.samples_count is not None:
            steps = f" = {self.steps:,} steps" if self.steps is not None else ""
            gbs = f" (global_batch_size {self.global_batch_size})" if self.global_batch_size else ""
            state = "converged at" if self.converged else "last eval at"
            out.append(f"  {state + ':':<14} {self.samples_count:,} samples{steps}{gbs}")
        target = f"{self.target_accuracy:g}" if self.target_accuracy is not None else "unknown"
        out.append(f"  target:        eval_accuracy <= {target}")
        if self.step_time is not None:
            st = self.step_time
            out.append(
                f"  train step:    median {st.median_s:.3f} s, mean {st.mean_s:.3f} s "
                f"({st.events} tracked_stats events, from '{st.source}')"
            )
        if self.train_loss is not None:
            out.append(f"  train loss:    {self.train_loss:.4f} (last tracked_stats)")
        out.append(f"  eval curve ({len(self.eval_curve)} evals: samples_count, eval_accuracy):")
        for samples, accuracy in self.eval_curve:
            mark = "  <= target" if self.target_accuracy is not None and accuracy <= self.target_accuracy else ""
            out.append(f"    {samples:>12,}  {accuracy:.4f}{mark}")
        if self.relaxed_rules:
            out.append(f"  relaxed rules ({self.profile} profile):")
            out.extend(f"    - {r.name}: {r.reason}" for r in self.relaxed_rules)
        out.append("  checked:")
        out.extend(f"    - {c}" for c in self.checked)
        if self.failures:
            out.append("  failures:")
            out.extend(f"    - {f.format()}" for f in self.failures)
        if self.warnings:
            out.append("  warnings:")
            out.extend(f"    - {w}" for w in self.warnings)
        if verbose and self.official_messages:
            out.append("  official checker messages, verbatim:")
            for message in self.official_messages:
                out.extend(f"    | {line}" for line in message.splitlines())
        return "\n".join(out)


def check_log(path: str | Path, ruleset: str = DEFAULT_RULESET, profile: str = DEFAULT_PROFILE) -> LogReport:
    """Check one MLPerf log for llama31_8b and summarize the run; never raises on log content.

    Run from the command line as `python -m compliance.check LOG [--ruleset 6.0.0] [--profile smoke]`.
    """
    if ruleset not in RULESETS:
        raise ValueError(f"ruleset {ruleset!r} is not supported; choose one of {', '.join(RULESETS)}")
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r} is not supported; choose one of {', '.join(PROFILES)}")
    report = LogReport(
        path=str(path),
        ruleset=ruleset,
        profile=profile,
        relaxed_rules=list(SMOKE_RELAXATIONS) if profile == "smoke" else [],
    )
    report.checked = _what_is_checked(ruleset, profile)
    try:
        log = read_mllog(path)
    except LogReadError as err:
        report.failures.append(Failure(str(err), None, "log file"))
        return report
    report.failures.extend(Failure(p.message, p.lineno, "log file") for p in log.problems)
    _summarize(log, report)
    if not log.parser_lines:
        report.failures.append(
            Failure(
                "the file has no :::MLLOG lines (empty, or not an MLPerf log); the official checker was not run",
                None,
                "log file",
            )
        )
        report.passed = False
        return report
    _run_official(log, report)
    _run_summary_checks(log, report)
    report.failures.sort(key=lambda f: (f.line is None, f.line or 0))
    report.passed = not report.failures
    return report


def _what_is_checked(ruleset: str, profile: str) -> list[str]:
    try:
        version = metadata.version("mlperf-logging")
    except metadata.PackageNotFoundError:
        version = "(version unknown)"
    rules = f"official compliance rules (mlperf-logging {version}, training {ruleset}, {BENCHMARK}, closed" + (
        f", with {len(SMOKE_RELAXATIONS)} scale rules relaxed for the smoke profile)" if profile == "smoke" else ")"
    )
    return [
        rules,
        "every :::MLLOG line is readable JSON with time_ms, key, value and metadata",
        "run_stop status is 'success'",
        f"the log is a closed-division {BENCHMARK} log with one run_start, run_stop and init_stop",
        "run_stop's time_ms is not before run_start's (no negative time to train)",
    ]


def _summarize(log: MLLogFile, report: LogReport) -> None:
    for key in SUMMARY_KEYS:
        event = log.first(key)
        if event is not None:
            report.hyperparameters[key] = event.value
            report.key_lines[key] = event.lineno
    run_start, run_stop = log.first("run_start"), log.first("run_stop")
    # First of each, as the official result summarizer takes them.
    if run_start is not None and run_stop is not None:
        report.time_to_train_ms = run_stop.time_ms - run_start.time_ms
    if run_stop is not None:
        report.status = run_stop.metadata.get("status")
    init_start, init_stop = log.first("init_start"), log.first("init_stop")
    if init_start is not None and init_stop is not None:
        report.init_time_ms = init_stop.time_ms - init_start.time_ms
        report.init_within_limit = report.init_time_ms < report.init_limit_ms
    report.eval_curve = [
        (e.metadata["samples_count"], e.value)
        for e in log.of("eval_accuracy")
        if _is_number(e.metadata.get("samples_count"))
    ]
    gbs = report.hyperparameters.get("global_batch_size")
    report.global_batch_size = gbs if _is_int(gbs) and gbs > 0 else None
    if report.eval_curve:
        report.samples_count = report.eval_curve[-1][0]
        if (
            report.global_batch_size
            and _is_int(report.samples_count)
            and report.samples_count % report.global_batch_size == 0
        ):
            report.steps = report.samples_count // report.global_batch_size
    if report.profile == "smoke":
        logged = report.hyperparameters.get("target_accuracy")
        report.target_accuracy = logged if _is_number(logged) else None
    else:
        report.target_accuracy = official_target(report.ruleset)
    if report.target_accuracy is not None:
        report.converged = any(acc <= report.target_accuracy for _, acc in report.eval_curve)
    report.step_time, report.train_loss = _tracked_stats(log, report.global_batch_size)


def _tracked_stats(log: MLLogFile, gbs: int | None) -> tuple[StepTime | None, float | None]:
    seconds: list[float] = []
    source = None
    loss = None
    for event in log.of("tracked_stats"):
        stats = event.value
        if not isinstance(stats, dict):
            continue
        for name, to_seconds in _STEP_TIME_NAMES:
            if _is_number(stats.get(name)):
                seconds.append(stats[name] * to_seconds)
                source = name
                break
        else:
            # The MLPerf reference logs throughput in samples per second; a step is gbs samples.
            if gbs and _is_number(stats.get("throughput")) and stats["throughput"] > 0:
                seconds.append(gbs / stats["throughput"])
                source = "throughput (samples/s)"
        for name in _LOSS_NAMES:
            if _is_number(stats.get(name)):
                loss = float(stats[name])
                break
    if not seconds:
        return None, loss
    return StepTime(len(seconds), statistics.median(seconds), statistics.fmean(seconds), source), loss


def _run_official(log: MLLogFile, report: LogReport) -> None:
    try:
        with rule_files(report.ruleset, report.profile) as config:
            result = run_official_checker(log.parser_lines, report.ruleset, config)
    except (RulesetError, OSError) as err:
        report.failures.append(Failure(f"the {report.profile} rules could not be prepared: {err}", None, "profile"))
        return
    report.official_messages = [m for _, m in result.messages] + [m for _, m in result.warnings]
    for key, message in result.messages:
        if log.problems and message.startswith("Log lines had parsing errors"):
            continue  # each unreadable line is already a failure of its own, with its line number
        report.failures.append(translate(key, message, log, report.target_accuracy))
    if result.crashed:
        report.failures.append(
            Failure(
                f"the official checker stopped with an error ({result.crashed}); "
                "its remaining rules were not evaluated",
                None,
            )
        )
    for _key, message in result.warnings:
        text, repeated_key, line = warning_text(message, log)
        if repeated_key in _MUST_BE_UNIQUE:
            report.failures.append(
                Failure(f"{text}: the time to train would be ambiguous", line, "run summary", detail=message)
            )
        else:
            report.warnings.append(f"line {line}: {text}" if line else text)


def _run_summary_checks(log: MLLogFile, report: LogReport) -> None:
    benchmark = log.first("submission_benchmark")
    if benchmark is not None and benchmark.value != BENCHMARK:
        report.failures.append(
            Failure(
                f"submission_benchmark is {benchmark.value!r}; this tool checks {BENCHMARK} logs",
                benchmark.lineno,
                "profile",
            )
        )
    division = log.first("submission_division")
    if division is not None and division.value == "open":
        report.failures.append(
            Failure(
                f"submission_division is 'open'; the {report.profile} profile checks closed-division logs",
                division.lineno,
                "profile",
            )
        )
    run_start, run_stop = log.first("run_start"), log.first("run_stop")
    if run_start is not None and run_stop is not None and run_stop.time_ms < run_start.time_ms:
        # The official checker orders events by their place in the file, not by time_ms, so a clock
        # that jumped back (or an edited log) would pass it with a negative score.
        report.failures.append(
            Failure(
                f"{NEGATIVE_TIME_RULE}: run_stop's time_ms {_ms(run_stop.time_ms)} is "
                f"{_ms(run_start.time_ms - run_stop.time_ms)} ms before run_start's (line {run_start.lineno}), "
                "a negative time to train; check the clock of the machine that wrote the log",
                run_stop.lineno,
                "run summary",
            )
        )
    if run_stop is not None and report.status is not None and report.status != "success":
        reason = "" if report.converged else " and no eval_accuracy reached the target"
        report.failures.append(
            Failure(
                f"run_stop status is {report.status!r}{reason}; only a run that stops with status 'success' counts",
                run_stop.lineno,
                "run summary",
            )
        )


def duration_text(minutes: float) -> str:
    """Minutes as text; short runs (the smoke profile) in seconds, where minutes would round to nothing."""
    return f"{minutes:,.2f} min" if minutes >= 2 else f"{minutes * 60:.1f} s"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ms(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3f}"
