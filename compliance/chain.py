"""One run split over several jobs (the launcher's NPAR > 1), checked as one run.

The launcher writes such a run as `<run>/mlperf_part1.log`, `mlperf_part2.log`, ...: each job
trains JOB_SAMPLES samples, checkpoints, closes its log with run_stop status `aborted` (a pause),
and the next job resumes from the checkpoint with a log of its own. Each part is checked on its own
by `check_log`; this module joins them into one `ChainReport`:

* the parts are numbered 1..n with none missing, follow each other in time, and each one starts
  training at the samples_count where the one before it stopped (so the eval curve is continuous);
* every part but the last stopped as a pause (status `aborted`, continued by the next part), and
  is excused the two rules a pause breaks (status `success`, an eval_accuracy at the target); the
  run's status is the last part's, and its last part keeps every rule;
* the parts share every hyperparameter the report shows (seed, batch size, schedule);
* the time to train is the sum of the parts' run_start -> run_stop; the gaps between jobs (queue
  wait, job start, the next part's init) are shown apart and not counted.

MLPerf times one uninterrupted run_start -> run_stop, so a split run's time is never a submittable
MLPerf time; the report says so wherever it shows one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from compliance.log_report import LogReport, check_log, duration_text
from compliance.messages import TARGET_NOT_REACHED, Failure
from compliance.mllog_file import LogReadError, read_mllog

# The launcher's part logs: <stem>_part<k>.log (run_llama31.sh, log_file).
PART_NAME = re.compile(r"^(?P<stem>.+)_part(?P<number>[0-9]+)\.log$")
NOT_SUBMITTABLE = (
    "a run split over jobs is timed as the sum of its parts' run_start -> run_stop, without the gaps "
    "between jobs; MLPerf times one uninterrupted run_start -> run_stop, so this is not a submittable "
    "MLPerf time (nor is a score that includes it)"
)
ORIGIN = "chained run"
# The two rules a deliberate pause breaks, as check_log words them: run_stop status 'success', and
# the official eval_accuracy check that some eval reached the target. A part that the next one
# continues is excused these two only; the run's last part keeps them.
_STATUS_FAILURE = "run_stop status is "


def _broken_by_a_pause(failure: Failure) -> bool:
    if failure.origin == "run summary":
        return failure.rule.startswith(_STATUS_FAILURE)
    return failure.origin == "official checker" and failure.rule.startswith(TARGET_NOT_REACHED)


@dataclass(frozen=True)
class PartTimes:
    """What joining needs from one part's log, beyond its LogReport."""

    init_start_ms: float | None = None
    run_start_ms: float | None = None
    run_stop_ms: float | None = None
    first_samples: int | None = None  # samples_count of the first block_start
    last_samples: int | None = None  # samples_count of run_stop (else of the last eval)

    @property
    def time_to_train_ms(self) -> float | None:
        if self.run_start_ms is None or self.run_stop_ms is None:
            return None
        return self.run_stop_ms - self.run_start_ms


@dataclass
class ChainReport(LogReport):
    """A chained run: the LogReport fields describe the whole run; `parts` hold each part's own."""

    parts: list[LogReport] = field(default_factory=list)
    part_numbers: list[int] = field(default_factory=list)
    part_times: list[PartTimes] = field(default_factory=list)
    # gaps_ms[i]: part i's run_stop -> part i+1's run_start (None where either is missing).
    gaps_ms: list[float | None] = field(default_factory=list)

    @property
    def gaps_total_ms(self) -> float:
        return sum(g for g in self.gaps_ms if g is not None)

    def headline(self) -> str:
        gaps = f", gaps between jobs {duration_text(self.gaps_total_ms / 60_000)} (not counted)" if self.gaps_ms else ""
        return f"{super().headline()}; chained run of {len(self.parts)} parts{gaps}; not a submittable MLPerf time"

    def format(self, verbose: bool = False) -> str:
        lines = super().format(verbose).splitlines()
        parts = [f"  parts ({len(self.parts)} jobs; {NOT_SUBMITTABLE}):"]
        for index, (number, part, times) in enumerate(zip(self.part_numbers, self.parts, self.part_times, strict=True)):
            span = _samples_span(times)
            run_time = "n/a" if times.time_to_train_ms is None else duration_text(times.time_to_train_ms / 60_000)
            parts.append(
                f"    part {number}: {Path(part.path).name}, status {part.status or 'n/a'}, "
                f"run_start -> run_stop {run_time}, samples {span}"
            )
            if index < len(self.gaps_ms):
                gap = self.gaps_ms[index]
                parts.append(
                    "      gap to the next job: "
                    + ("n/a" if gap is None else duration_text(gap / 60_000))
                    + " (queue wait, job start and the next part's init; not counted)"
                )
        # Right after the time-to-train line, which now reads as the sum over the parts.
        at = next((i for i, line in enumerate(lines) if line.startswith("  time to train:")), len(lines) - 1) + 1
        return "\n".join(lines[:at] + parts + lines[at:])


def find_chains(paths: list[Path]) -> tuple[list[Path], list[list[tuple[int, Path]]]]:
    """Split logs into single logs and chains: part logs of one stem in one folder form a chain,
    ordered by part number."""
    groups: dict[tuple[Path, str], list[tuple[int, Path]]] = {}
    singles: list[Path] = []
    for path in paths:
        match = PART_NAME.match(path.name)
        if match is None:
            singles.append(path)
        else:
            groups.setdefault((path.parent, match["stem"]), []).append((int(match["number"]), path))
    return singles, [sorted(parts) for parts in groups.values()]


def chain_path(parts: list[tuple[int, Path]]) -> Path:
    """The name a chained run is shown under: its part logs as a glob."""
    first = parts[0][1]
    return first.with_name(PART_NAME.match(first.name)["stem"] + "_part*.log")


def check_chain(parts: list[tuple[int, Path]], ruleset: str, profile: str) -> ChainReport:
    """Check each part with `check_log` and the parts together as one run."""
    reports = [check_log(path, ruleset=ruleset, profile=profile) for _, path in parts]
    times = [_part_times(path) for _, path in parts]
    numbers = [number for number, _ in parts]
    last = reports[-1]
    chain = ChainReport(
        path=str(chain_path(parts)),
        ruleset=ruleset,
        profile=profile,
        parts=reports,
        part_numbers=numbers,
        part_times=times,
        relaxed_rules=list(last.relaxed_rules),
        hyperparameters=dict(reports[0].hyperparameters),
        key_lines=dict(reports[0].key_lines),
        status=last.status,
        init_time_ms=reports[0].init_time_ms,
        init_within_limit=reports[0].init_within_limit,
        global_batch_size=reports[0].global_batch_size,
        target_accuracy=last.target_accuracy,
        train_loss=last.train_loss,
    )
    chain.checked = list(reports[0].checked) + [
        "a chained run's parts: numbered 1..n with none missing, in time order, each starting at the samples "
        "where the one before stopped, every part but the last a pause (status 'aborted'; excused the status "
        "and target rules, which its run's last part keeps), one set of hyperparameters; time to train summed "
        "over the parts, gaps between jobs apart"
    ]
    chain.eval_curve = [point for report in reports for point in report.eval_curve]
    if chain.eval_curve:
        chain.samples_count = chain.eval_curve[-1][0]
        chain.steps = last.steps
    if chain.target_accuracy is not None:
        chain.converged = any(acc <= chain.target_accuracy for _, acc in chain.eval_curve)
    part_ms = [t.time_to_train_ms for t in times]
    if all(ms is not None for ms in part_ms):
        chain.time_to_train_ms = sum(part_ms)
    chain.gaps_ms = [
        None if before.run_stop_ms is None or after.run_start_ms is None else after.run_start_ms - before.run_stop_ms
        for before, after in zip(times, times[1:], strict=False)
    ]
    problems = _chain_failures(chain)
    pauses = _confirmed_pauses(chain)
    for index, report in enumerate(reports):
        name = Path(report.path).name
        for failure in report.failures:
            if index in pauses and _broken_by_a_pause(failure):
                continue  # the deliberate pause of a part that the next one continues
            chain.failures.append(
                Failure(failure.rule, failure.line, failure.origin, failure.detail, file=failure.file or name)
            )
        chain.warnings.extend(f"{name}: {warning}" for warning in report.warnings)
        chain.official_messages.extend(f"{name}: {message}" for message in report.official_messages)
    chain.failures.extend(problems)
    chain.warnings.append(NOT_SUBMITTABLE)
    chain.passed = not chain.failures
    return chain


def _part_times(path: Path) -> PartTimes:
    try:
        log = read_mllog(path)
    except LogReadError:
        return PartTimes()  # check_log reports the unreadable file
    init_start, run_start, run_stop = log.first("init_start"), log.first("run_start"), log.first("run_stop")
    blocks = [e.metadata.get("samples_count") for e in log.of("block_start")]
    evals = [e.metadata.get("samples_count") for e in log.of("eval_accuracy")]
    last = run_stop.metadata.get("samples_count") if run_stop is not None else None
    if not _is_int(last):
        last = evals[-1] if evals and _is_int(evals[-1]) else None
    return PartTimes(
        init_start_ms=init_start.time_ms if init_start is not None else None,
        run_start_ms=run_start.time_ms if run_start is not None else None,
        run_stop_ms=run_stop.time_ms if run_stop is not None else None,
        first_samples=blocks[0] if blocks and _is_int(blocks[0]) else None,
        last_samples=last,
    )


def _continues(before: PartTimes, after: PartTimes) -> bool:
    return before.last_samples is not None and after.first_samples == before.last_samples


def _confirmed_pauses(chain: ChainReport) -> set[int]:
    """Indices of the parts that stopped as a pause which the next part continues."""
    return {
        index
        for index, (report, times) in enumerate(zip(chain.parts[:-1], chain.part_times[:-1], strict=True))
        if report.status == "aborted" and _continues(times, chain.part_times[index + 1])
    }


def _chain_failures(chain: ChainReport) -> list[Failure]:
    failures: list[Failure] = []
    numbers = chain.part_numbers
    names = [Path(report.path).name for report in chain.parts]
    expected = list(range(1, numbers[-1] + 1))
    if numbers != expected:
        missing = sorted(set(expected) - set(numbers))
        found = ", ".join(map(str, numbers))
        what = f"part(s) {', '.join(map(str, missing))} missing" if missing else "parts numbered from 0"
        failures.append(
            Failure(
                f"{what}: found parts {found}; a run split over jobs has its parts numbered 1, 2, ... with none "
                "left out (was a job's log deleted, or did its job never start?)",
                None,
                ORIGIN,
            )
        )
    for key in (
        "submission_benchmark",
        "seed",
        "global_batch_size",
        "max_sequence_length",
        "opt_base_learning_rate",
        "opt_learning_rate_warmup_steps",
        "opt_learning_rate_decay_steps",
        "max_steps",
        "target_accuracy",
    ):
        values: dict[str, list[str]] = {}
        for report, name in zip(chain.parts, names, strict=True):
            values.setdefault(repr(report.hyperparameters.get(key)), []).append(name)
        if len(values) > 1:
            where = "; ".join(f"{value} in {', '.join(files)}" for value, files in values.items())
            failures.append(
                Failure(f"the parts differ in {key} ({where}): the parts of one run share every setting", None, ORIGIN)
            )
    for index in range(len(chain.parts) - 1):
        before, after = chain.part_times[index], chain.part_times[index + 1]
        report, name, next_name = chain.parts[index], names[index], names[index + 1]
        if report.status == "success":
            failures.append(
                Failure(
                    f"{name} stopped with status 'success' (the run reached its target) but {next_name} follows; "
                    "a run ends at its target, so the later part belongs to another run",
                    None,
                    ORIGIN,
                )
            )
        if not _continues(before, after):
            failures.append(
                Failure(
                    f"{next_name} starts training at samples_count {_samples(after.first_samples)} but {name} stopped "
                    f"at {_samples(before.last_samples)}: the parts are out of order, one is missing, or a part did "
                    "not resume from the checkpoint the one before it saved",
                    None,
                    ORIGIN,
                )
            )
        start = after.init_start_ms if after.init_start_ms is not None else after.run_start_ms
        if before.run_stop_ms is not None and start is not None and start < before.run_stop_ms:
            failures.append(
                Failure(
                    f"{next_name} starts ({_ms(start)} ms) before {name}'s run_stop ({_ms(before.run_stop_ms)} ms): "
                    "the parts overlap or are out of order; each job starts after the one before it ended",
                    None,
                    ORIGIN,
                )
            )
    return failures


def _samples_span(times: PartTimes) -> str:
    return f"{_samples(times.first_samples)} -> {_samples(times.last_samples)}"


def _samples(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def _ms(value: float) -> str:
    return f"{value:,.0f}"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
