"""Check a folder of llama31_8b runs: every log, the RCP check, the score, and a written report.

Run as `python -m compliance.check FOLDER` (see `compliance.check`). A folder is either

* a submission's `results/<system>/llama31_8b/` holding `result_*.txt`, or
* a launcher's job folder where each run is `<run>/` holding an MLPerf log (`*.log`), or a flat
  folder of `*.log` files, one per run.

Files named `result_*.txt` or `*.log`, in the folder or one level below it, that contain
`:::MLLOG` lines are taken as runs; where run folders exist, a `*.log` directly in the folder is
taken as a job-level log and skipped (with a note). The official RCP checker only reads `result_*.txt` in the
folder it is given, so the logs are staged there as symlinks in a temporary folder instead of
asking users to rename anything. The score is the official result summarizer's olympic average
of the times to train (minutes), and the report (markdown and two PNG plots) is written next
to the logs.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from compliance.chain import NOT_SUBMITTABLE, ChainReport, chain_path, check_chain, find_chains
from compliance.log_report import LogReport, check_log, duration_text
from compliance.mllog_file import TOKEN, LogReadError, read_mllog
from compliance.rules import BENCHMARK, DEFAULT_PROFILE, DEFAULT_RULESET, SMOKE_RELAXATIONS, USAGE, captured_logging

REPORT_NAME = "compliance_report.md"
EVAL_PLOT_NAME = "compliance_eval_accuracy.png"
TIME_PLOT_NAME = "compliance_time_to_train.png"
_PATTERNS = ("result_*.txt", "*.log", "*/result_*.txt", "*/*.log")
# The RCP checker's olympic mean drops the best and worst run, so it needs three to say anything.
_MIN_RUNS_FOR_RCP = 3


@dataclass
class RcpResult:
    """Outcome of `mlperf_logging.rcp_checker.check_directory` on the folder's runs."""

    checked: bool = False
    passed: bool | None = None
    message: str = ""  # the official message, or why the check was not run
    rcp_mean: float | None = None  # RCP olympic mean samples to converge for this batch size
    min_acceptable_mean: float | None = None  # RCP mean / max speedup
    submission_mean: float | None = None  # the runs' olympic mean samples, as the checker computed it
    norm_factor: float | None = None  # score normalization the checker derived (1.0 = none)
    log_output: list[str] = field(default_factory=list)


@dataclass
class FolderReport:
    """Everything `check_folder` found out about a folder of runs."""

    folder: Path
    ruleset: str
    profile: str
    runs: list[LogReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # folder-level failures
    notes: list[str] = field(default_factory=list)
    rcp: RcpResult = field(default_factory=RcpResult)
    global_batch_size: int | None = None
    required_runs: int = 10
    score_min: float | None = None  # olympic mean time to train, minutes
    mean_min: float | None = None  # plain mean of the passing runs, minutes
    checked: list[str] = field(default_factory=list)
    report_files: list[Path] = field(default_factory=list)
    passed: bool = False

    def name(self, run: LogReport) -> str:
        """A run's log path relative to the folder."""
        try:
            return str(Path(run.path).relative_to(self.folder))
        except ValueError:
            return run.path

    def format(self, verbose: bool = False) -> str:
        """Readable summary for the terminal: one block per run (the full summary if `verbose`),
        then the folder's results."""
        out = []
        for run in self.runs:
            if verbose:
                out.append(run.format(verbose=True) + "\n")
                continue
            out.append(f"{self.name(run)}: {run.headline()}")
            out.extend(f"    - {f.format()}" for f in run.failures)
        passed = sum(r.passed for r in self.runs)
        out += [
            "",
            f"Folder: {self.folder}",
            f"  result:  {'PASSED' if self.passed else 'FAILED'}",
            f"  runs:    {len(self.runs)} found, {passed} passed"
            + (f" (a {BENCHMARK} submission has {self.required_runs})" if len(self.runs) != self.required_runs else ""),
            f"  score:   {_score_text(self)}",
            f"  RCP:     {_rcp_text(self.rcp)}",
            "  checked:",
            *(f"    - {c}" for c in self.checked),
        ]
        if self.problems:
            out += ["  folder failures:", *(f"    - {p}" for p in self.problems)]
        if self.notes:
            out += ["  notes:", *(f"    - {n}" for n in self.notes)]
        if verbose and self.rcp.log_output:
            out += ["  official RCP checker output, verbatim:", *(f"    | {line}" for line in self.rcp.log_output)]
        if self.report_files:
            out += ["  report:", *(f"    {p}" for p in self.report_files)]
        return "\n".join(out)


def check_folder(
    folder: str | Path,
    ruleset: str = DEFAULT_RULESET,
    profile: str = DEFAULT_PROFILE,
    report_dir: str | Path | None = None,
) -> FolderReport:
    """Check every run in `folder`; write the report into `report_dir` unless it is None.

    Run from the command line as `python -m compliance.check FOLDER [--report-dir DIR | --no-report]`.
    """
    from mlperf_logging.benchmark_meta import get_result_file_counts

    folder = Path(folder)
    report = FolderReport(folder=folder, ruleset=ruleset, profile=profile)
    report.required_runs = get_result_file_counts(USAGE)[BENCHMARK]
    entries = _discover(folder, report)
    # A run is one log, or the part logs of one run split over jobs; the verdict counts runs.
    report.runs = [
        check_log(entry, ruleset=ruleset, profile=profile)
        if isinstance(entry, Path)
        else check_chain(entry, ruleset=ruleset, profile=profile)
        for entry in entries
    ]
    report.checked = _what_is_checked(report)
    if not report.runs:
        report.problems.append(
            f"{folder}: no MLPerf logs found (looked for {', '.join(_PATTERNS)} containing :::MLLOG lines)"
        )
    else:
        consistent = _check_consistency(report)
        _check_run_count(report)
        chained = [report.name(run) for run in report.runs if isinstance(run, ChainReport)]
        if chained:
            report.notes.append(f"{len(chained)} run(s) split over jobs ({', '.join(chained)}): {NOT_SUBMITTABLE}")
        if consistent:
            _score(report)
        else:
            report.notes.append("no score: the runs mix benchmarks or batch sizes")
        _rcp(report, consistent)
    report.passed = _verdict(report)
    if report_dir is not None and report.runs:
        _write_report(report, Path(report_dir))
        report.passed = _verdict(report)  # a report that could not be written is a folder failure
    return report


def _verdict(report: FolderReport) -> bool:
    runs_pass = bool(report.runs) and all(r.passed for r in report.runs)
    return runs_pass and not report.problems and report.rcp.passed is not False


def _check_run_count(report: FolderReport) -> None:
    """The official package checker wants exactly the benchmark's result-file count (10 for llama31_8b),
    and the result summarizer's olympic mean is defined on that count; the smoke profile is a test of
    the machinery, not a submission, so there it is only said."""
    count, required = len(report.runs), report.required_runs
    if count == required:
        return
    rule = (
        f"a {BENCHMARK} result folder holds exactly {required} runs (mlperf_logging benchmark_meta "
        f"result_file_counts, which the package checker and the result summarizer score on)"
    )
    if report.profile == "smoke":
        report.notes.append(
            f"{count} run(s): {rule}; the smoke profile only says so, and the score and the RCP check "
            "describe a partial set"
        )
    else:
        fix = f"add the missing {required - count}" if count < required else f"remove {count - required}"
        report.problems.append(f"{count} run(s) found: {rule}; {fix} (or check with --profile smoke for a test set)")


def _discover(folder: Path, report: FolderReport) -> list[Path | list[tuple[int, Path]]]:
    found: list[Path] = []
    for pattern in _PATTERNS:
        for path in sorted(folder.glob(pattern)):
            if path.is_file() and path not in found and _has_mllog_lines(path):
                found.append(path)
    # Beside run folders, a top-level *.log is a job-level log (say, a scheduler's output that echoes
    # every run's lines), not a run of its own.
    if any(path.parent != folder for path in found):
        for path in [p for p in found if p.parent == folder and p.suffix == ".log"]:
            found.remove(path)
            report.notes.append(f"{path.name}: a *.log beside run folders is taken as a job-level log; not a run")
    # The same log may be written twice (a log file and a captured stdout); count it once.
    unique: list[Path] = []
    seen: dict[str, Path] = {}
    for path in found:
        try:
            digest = hashlib.sha256("\n".join(read_mllog(path).parser_lines).encode("latin-1")).hexdigest()
        except LogReadError:
            digest = str(path)
        if digest in seen:
            report.notes.append(
                f"{path.relative_to(folder)}: same :::MLLOG lines as {seen[digest].relative_to(folder)}; counted once"
            )
            continue
        seen[digest] = path
        unique.append(path)
    # The part logs of a run split over jobs (<stem>_part<k>.log) are one run.
    singles, chains = find_chains(unique)
    entries: list[Path | list[tuple[int, Path]]] = [*singles, *chains]
    entries.sort(key=lambda entry: str(entry if isinstance(entry, Path) else chain_path(entry)))
    per_run_folder: dict[Path, list[str]] = defaultdict(list)
    for entry in entries:
        parent = entry.parent if isinstance(entry, Path) else entry[0][1].parent
        if parent != folder:
            per_run_folder[parent].append(entry.name if isinstance(entry, Path) else chain_path(entry).name)
    for run_folder, names in per_run_folder.items():
        if len(names) > 1:
            report.problems.append(
                f"{run_folder.relative_to(folder)}/: one run folder holds {len(names)} different MLPerf logs "
                f"({', '.join(names)}); a run is one log with one run_start and one run_stop, or the part "
                "logs <name>_part<k>.log of one run split over jobs"
            )
    return entries


def _has_mllog_lines(path: Path) -> bool:
    try:
        with open(path, encoding="latin-1") as f:
            return any(TOKEN in line for line in f)
    except OSError:
        return True  # unreadable: let check_log report why


def _what_is_checked(report: FolderReport) -> list[str]:
    version = metadata.version("mlperf-logging")
    each = report.runs[0].checked[0] if report.runs else "the official compliance rules"
    checked = [
        f"each log: {each}, readable lines, run_stop status 'success'",
        "one benchmark and one global_batch_size across the runs",
    ]
    if report.profile == "smoke":
        checked.append("RCP check: not applicable to the smoke profile (RCPs describe the 8B at sequence length 8192)")
    else:
        checked.append(
            f"RCP check: mlperf_logging {version} rcp_checker, training {report.ruleset}, pruned RCPs, "
            "as `python -m mlperf_logging.rcp_checker` runs it"
        )
    checked.append("score: olympic mean of the passing runs' times to train (mlperf_logging result summarizer)")
    checked.append(
        f"run count: exactly {report.required_runs} runs (mlperf_logging benchmark_meta; smoke profile: said only)"
    )
    chains = [run for run in report.runs if isinstance(run, ChainReport)]
    if chains:
        checked.append(f"runs split over jobs, each as one run: {chains[0].checked[-1]}")
    return checked


def _check_consistency(report: FolderReport) -> bool:
    consistent = True
    for key, label in (("submission_benchmark", "benchmarks"), ("global_batch_size", "batch sizes")):
        groups: dict[str, list[str]] = defaultdict(list)
        for run in report.runs:
            if key in run.hyperparameters:
                groups[repr(run.hyperparameters[key])].append(f"{report.name(run)} line {run.key_lines[key]}")
        if len(groups) > 1:
            consistent = False
            where = "; ".join(f"{key} {value} in {', '.join(places)}" for value, places in groups.items())
            report.problems.append(f"the runs mix {label}: {where}; one folder must hold one {key}")
    gbs = {run.global_batch_size for run in report.runs if run.global_batch_size is not None}
    if consistent and len(gbs) == 1:
        report.global_batch_size = gbs.pop()
    return consistent


def _score(report: FolderReport) -> None:
    from mlperf_logging.result_summarizer import result_summarizer

    minutes = [r.time_to_train_min for r in report.runs if r.passed and r.time_to_train_min is not None]
    dropped = len(report.runs) - len(minutes)
    if minutes:
        report.mean_min = sum(minutes) / len(minutes)
    # The summarizer drops at most one failed run (as the worst score) before olympic averaging.
    max_dropped = 1
    if dropped > max_dropped:
        report.notes.append(
            f"{dropped} runs did not pass; the official scoring tolerates {max_dropped}, so there is no score"
        )
        return
    report.score_min = result_summarizer._compute_olympic_average(list(minutes), dropped, max_dropped)
    if report.score_min is None:
        report.notes.append("the olympic mean drops the best and the worst run, so it needs at least 3 runs")


def _rcp(report: FolderReport, consistent: bool) -> None:
    rcp = report.rcp
    if report.profile == "smoke":
        rcp.message = "not run: RCPs describe the 8B at sequence length 8192; a smoke run cannot be compared"
        return
    if not consistent:
        rcp.message = "not run: the runs mix benchmarks or batch sizes (see folder failures)"
        return
    if len(report.runs) < _MIN_RUNS_FOR_RCP:
        rcp.message = (
            f"not run: {len(report.runs)} run(s); the RCP check's olympic mean needs at least {_MIN_RUNS_FOR_RCP}"
        )
        return
    from mlperf_logging.rcp_checker import rcp_checker

    with tempfile.TemporaryDirectory(prefix="llama31_8b_rcp_") as stage, captured_logging() as records:
        # The official checker reads <folder>/result_*.txt only.
        for index, run in enumerate(report.runs):
            # A chained run's last part holds its converging eval (samples_count runs on across parts)
            # and the run_stop status the checker reads.
            log = run.parts[-1].path if isinstance(run, ChainReport) else run.path
            _stage(Path(log).resolve(), Path(stage) / f"result_{index}.txt")
        try:
            passed, message, norm = rcp_checker.check_directory(
                stage, USAGE, report.ruleset, False, False, rcp_file=None, rcp_pass="pruned_rcps"
            )
        except Exception as err:  # it parses logs without guarding against malformed lines
            rcp.checked, rcp.passed = True, False
            rcp.message = (
                f"the official RCP checker could not read the logs ({type(err).__name__}: {err}); "
                "fix the unreadable lines reported above"
            )
            return
    rcp.checked, rcp.passed, rcp.message, rcp.norm_factor = True, bool(passed), message, norm
    for record in records:
        text = record.getMessage().strip()
        rcp.log_output.append(text)
        # logging stores a lone dict argument as record.args itself.
        if record.msg == " RCP Record: %s" and isinstance(record.args, dict):
            data = record.args
            rcp.rcp_mean = float(data["RCP Mean"])
            if data.get("Max Speedup"):
                rcp.min_acceptable_mean = float(data["RCP Mean"] / data["Max Speedup"])
        elif record.msg == " Submission mean epochs: %.4f":
            rcp.submission_mean = float(record.args[0])
    if not rcp.passed:
        report.problems.append(f"RCP check failed: {_rcp_text(rcp)}")


def _stage(source: Path, link: Path) -> None:
    try:
        os.symlink(source, link)
    except OSError:  # file systems without symlinks: a copy reads the same
        shutil.copyfile(source, link)


def _score_text(report: FolderReport) -> str:
    if report.score_min is None:
        plain = f" (plain mean of the passing runs: {duration_text(report.mean_min)})" if report.mean_min else ""
        return "n/a" + plain
    kept = sum(r.passed for r in report.runs)
    if kept == len(report.runs):
        text = f"{duration_text(report.score_min)}, olympic mean of {kept} runs without the best and the worst"
    else:
        text = (
            f"{duration_text(report.score_min)}, olympic mean of {kept} passing runs without the best "
            "(the failed run counts as the worst)"
        )
    if len(report.runs) != report.required_runs:
        text += f"; {len(report.runs)} runs present, the rules score exactly {report.required_runs}"
    if any(isinstance(run, ChainReport) for run in report.runs):
        text += "; includes run(s) split over jobs: not a submittable MLPerf score"
    factor = report.rcp.norm_factor
    if factor is not None and factor > 1.0:
        text += f"; with the RCP normalization factor {factor:.4f}: {duration_text(report.score_min * factor)}"
    return text


def _rcp_text(rcp: RcpResult) -> str:
    if not rcp.checked:
        return rcp.message
    text = f"{'PASSED' if rcp.passed else 'FAILED'} ({rcp.message})"
    numbers = []
    if rcp.submission_mean is not None and math.isfinite(rcp.submission_mean):
        numbers.append(f"runs' olympic mean {rcp.submission_mean:,.0f} samples")
    if rcp.rcp_mean is not None:
        numbers.append(f"RCP mean {rcp.rcp_mean:,.0f}")
    if rcp.min_acceptable_mean is not None:
        numbers.append(f"fastest acceptable mean {rcp.min_acceptable_mean:,.0f}")
    return text + (": " + ", ".join(numbers) if numbers else "")


def _write_report(report: FolderReport, report_dir: Path) -> None:
    from compliance import plots

    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        eval_plot, time_plot = report_dir / EVAL_PLOT_NAME, report_dir / TIME_PLOT_NAME
        plots.eval_curves(report, eval_plot)
        plots.times_to_train(report, time_plot)
        markdown = report_dir / REPORT_NAME
        markdown.write_text(to_markdown(report, report_dir))
    except OSError as err:
        report.problems.append(f"could not write the report into {report_dir}: {err.strerror or err}")
        return
    report.report_files = [markdown, eval_plot, time_plot]
    if any(
        report_dir.resolve() == Path(run.path).resolve().parent and Path(run.path).name.startswith("result_")
        for run in report.runs
    ):
        report.notes.append(
            "the report sits beside result_*.txt files: mlperf_logging's package checker warns about other files "
            "there, so move it out (or use --report-dir) before packaging a submission"
        )


def to_markdown(report: FolderReport, report_dir: Path) -> str:
    """The folder report as markdown, with links relative to `report_dir`."""
    version = metadata.version("mlperf-logging")
    lines = [
        f"# {BENCHMARK} compliance report",
        "",
        f"- folder: `{report.folder}`",
        f"- rules: mlperf-logging {version}, training {report.ruleset}, profile `{report.profile}`",
        f"- command: `python -m compliance.check {report.folder} --ruleset {report.ruleset} "
        f"--profile {report.profile}`",
        f"- **result: {'PASSED' if report.passed else 'FAILED'}**",
        "",
        "## What was checked",
        "",
        *(f"- {c}" for c in report.checked),
        "",
        "## Score",
        "",
        f"- time to train: {_score_text(report)}",
        f"- runs: {len(report.runs)} found, {sum(r.passed for r in report.runs)} passed "
        f"(a {BENCHMARK} submission has {report.required_runs})",
        f"- global batch size: {_num(report.global_batch_size, '{}', 'mixed or unknown')}",
        "",
        "## RCP check",
        "",
        f"- {_rcp_text(report.rcp)}",
        "",
        "## Runs",
        "",
        "| run | seed | status | time to train | samples | steps | init | evals | result |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for run in report.runs:
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{report.name(run)}`",
                    str(run.hyperparameters.get("seed", "")),
                    str(run.status or "n/a"),
                    "n/a" if run.time_to_train_min is None else duration_text(run.time_to_train_min),
                    _num(run.samples_count, "{:,}"),
                    _num(run.steps, "{:,}"),
                    "n/a" if run.init_time_ms is None else duration_text(run.init_time_ms / 60_000),
                    str(len(run.eval_curve)),
                    "passed" if run.passed else f"FAILED ({len(run.failures)})",
                ]
            )
            + " |"
        )
    chains = [run for run in report.runs if isinstance(run, ChainReport)]
    if chains:
        lines += ["", "## Runs split over jobs", "", f"{NOT_SUBMITTABLE[0].upper()}{NOT_SUBMITTABLE[1:]}.", ""]
        lines += [
            "| run | part | status | run_start -> run_stop | samples | gap to the next job |",
            "|---|---:|---|---:|---|---:|",
        ]
        for run in chains:
            parts = zip(run.part_numbers, run.parts, run.part_times, strict=True)
            for index, (number, part, times) in enumerate(parts):
                gap = run.gaps_ms[index] if index < len(run.gaps_ms) else None
                lines.append(
                    f"| `{report.name(run)}` | {number} | {part.status or 'n/a'} | "
                    + ("n/a" if times.time_to_train_ms is None else duration_text(times.time_to_train_ms / 60_000))
                    + f" | {_num(times.first_samples, '{:,}')} -> {_num(times.last_samples, '{:,}')} | "
                    + ("" if index == len(run.parts) - 1 else "n/a" if gap is None else duration_text(gap / 60_000))
                    + " |"
                )
    lines += ["", f"![eval_accuracy against samples]({EVAL_PLOT_NAME})", "", f"![time to train]({TIME_PLOT_NAME})"]
    failing = [run for run in report.runs if run.failures]
    if report.problems or failing:
        lines += ["", "## Failures", ""]
        lines += [f"- folder: {p}" for p in report.problems]
        for run in failing:
            for failure in run.failures:
                lines.append(f"- `{report.name(run)}` {failure.format()}")
    warned = [run for run in report.runs if run.warnings]
    if warned or report.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {n}" for n in report.notes]
        lines += [f"- `{report.name(run)}`: {w}" for run in warned for w in run.warnings]
    if report.profile == "smoke":
        lines += ["", "## Relaxed rules (smoke profile)", ""]
        lines += [f"- `{r.name}`: {r.reason}" for r in SMOKE_RELAXATIONS]
    return "\n".join(lines) + "\n"


def _num(value, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else spec.format(value)
