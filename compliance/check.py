"""Check llama31_8b MLPerf logs with the official mlperf_logging tools, in one command.

    python -m compliance.check LOG                  # one log: compliance + run summary
    python -m compliance.check FOLDER               # every run in a folder: + RCP check, score, report
    python -m compliance.check LOG --profile smoke  # the CPU smoke run's log (8B-scale rules relaxed)
    python -m compliance.check JOB_DIR              # a launcher's results: the profile it recorded applies
    python -m compliance.check LOG --ruleset 5.1.0  # another ruleset (5.1.0, 6.0.0, 6.1.0)

Exit status: 0 when everything checked passed, 1 when something failed, 2 for a usage error.

Library use (the benchmark's end-of-run summary):

    from compliance.check import check_log
    report = check_log("results/run.log", ruleset="6.0.0", profile="closed")
    print(report.format())

    from compliance.check import check_folder
    folder_report = check_folder("results/20260101-120000", report_dir=None)  # None: write no files
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compliance.folder import FolderReport, RcpResult, check_folder
from compliance.log_report import LogReport, StepTime, check_log
from compliance.messages import Failure
from compliance.rules import (
    DEFAULT_PROFILE,
    DEFAULT_RULESET,
    PROFILE_FILE,
    PROFILES,
    RULESETS,
    SMOKE_RELAXATIONS,
    RelaxedRule,
)

__all__ = [
    "check_log",
    "LogReport",
    "Failure",
    "RelaxedRule",
    "StepTime",
    "check_folder",
    "FolderReport",
    "RcpResult",
    "main",
]


def build_parser() -> argparse.ArgumentParser:
    relaxed = "; ".join(r.name for r in SMOKE_RELAXATIONS)
    parser = argparse.ArgumentParser(
        prog="python -m compliance.check",
        description=(
            "Check llama31_8b MLPerf logs with the official mlperf_logging compliance checker and summarize "
            "them. For a FOLDER of runs (a submission's results/<system>/llama31_8b/ with result_*.txt, or a "
            "job folder whose runs sit in <run>/ subfolders as *.log; any result_*.txt or *.log with :::MLLOG "
            "lines in the folder or one level below counts), also run the official RCP checker, compute the "
            "olympic-mean score and write a markdown report with plots next to the logs."
        ),
        epilog=(
            f"Profiles: 'closed' is the official rule set as shipped; 'smoke' relaxes only the rules that "
            f"encode the 8B scale ({relaxed}). Exit status: 0 when everything checked passed, 1 otherwise, "
            "2 for a usage error."
        ),
    )
    parser.add_argument("path", type=Path, metavar="LOG_OR_FOLDER", help="an MLPerf log file, or a folder of runs")
    parser.add_argument(
        "--ruleset",
        choices=RULESETS,
        default=DEFAULT_RULESET,
        help=f"mlperf_logging training ruleset (default {DEFAULT_RULESET})",
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help=(
            f"rules to apply (default: the profile the launcher recorded in the results folder's "
            f"{PROFILE_FILE}, for a log in the run folder below it too; else {DEFAULT_PROFILE})"
        ),
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="folder mode: where to write compliance_report.md and its plots (default: the checked folder)",
    )
    parser.add_argument("--no-report", action="store_true", help="folder mode: print the summary only, write no files")
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="also print the official checkers' messages verbatim"
    )
    return parser


def recorded_profile(path: Path) -> tuple[str | None, Path | None]:
    """The profile run_llama31.sh recorded for the results folder that `path` is, or holds the log of
    (the folder itself, or for a log the folder of its run and the one above); (None, None) if none.

    Raises ValueError, naming the file, when the recorded profile is not one this tool knows.
    """
    folders = [path] if path.is_dir() else [path.parent, path.parent.parent]
    for folder in folders:
        record = folder / PROFILE_FILE
        if not record.is_file():
            continue
        try:
            value = record.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"{record}: cannot be read ({err}); pass --profile to choose the rules") from err
        if value not in PROFILES:
            raise ValueError(
                f"{record} names the profile {value!r}; it must hold one of {', '.join(PROFILES)} "
                "(fix the file, or pass --profile to choose the rules)"
            )
        return value, record
    return None, None


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: `python -m compliance.check PATH [options]`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.path.exists():
        parser.error(f"{args.path}: no such file or folder")
    if args.profile is None:
        try:
            args.profile, record = recorded_profile(args.path)
        except ValueError as err:
            parser.error(str(err))
        if args.profile is None:
            args.profile = DEFAULT_PROFILE
        else:
            # Said first, so nobody mistakes the relaxed rules for the official ones.
            print(f"profile {args.profile}: recorded by the launcher in {record} (--profile overrides it)")
    if args.path.is_dir():
        folder_report = check_folder(
            args.path,
            ruleset=args.ruleset,
            profile=args.profile,
            report_dir=None if args.no_report else (args.report_dir or args.path),
        )
        print(folder_report.format(verbose=args.verbose))
        return 0 if folder_report.passed else 1
    report = check_log(args.path, ruleset=args.ruleset, profile=args.profile)
    print(report.format(verbose=args.verbose))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
