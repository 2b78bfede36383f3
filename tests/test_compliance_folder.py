"""Tests for `python -m compliance.check FOLDER`: RCP check, olympic score, report files, bad folders.

The logs are written by the helpers in tests/test_compliance_check.py (mlperf_logging's MLLogger,
the benchmark's key order, docs/FIDELITY.md). Run: .venv/bin/python -m pytest tests/test_compliance_folder.py -q
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from compliance.check import main
from compliance.folder import EVAL_PLOT_NAME, REPORT_NAME, TIME_PLOT_NAME, check_folder
from tests.test_compliance_check import REPO, Run, line_of, smoke_run, write_run

# Ten known times to train (minutes); the olympic mean drops 219 and 245: 1845 / 8.
MINUTES = [230, 221, 245, 228, 233, 219, 240, 226, 231, 236]
OLYMPIC = 230.625
# 15 evals of 12,288 samples at GBS 16 = 184,320 samples: slower than the GBS-16 RCP mean.
CONVERGES = [4.6, 4.1, 3.8, 3.6, 3.5, 3.45, 3.41, 3.38, 3.36, 3.34, 3.33, 3.32, 3.31, 3.305, 3.29]
EVAL_MS = 20_000


def timed_run(minutes: float, seed: int, accuracies=CONVERGES, **changes) -> Run:
    """A run whose run_stop - run_start is exactly `minutes`."""
    total_ms = round(minutes * 60_000)
    per_eval = total_ms // len(accuracies)
    assert per_eval * len(accuracies) == total_ms
    return Run(accuracies=list(accuracies), seed=seed, block_ms=per_eval - EVAL_MS, eval_ms=EVAL_MS, **changes)


def job_dir(root: Path, runs: list[Run]) -> Path:
    """A launcher-style folder: <root>/<run>/mllog.log."""
    for index, run in enumerate(runs):
        write_run(root / f"run_{index:02d}" / "mllog.log", run)
    return root


def test_ten_runs_score_rcp_and_report(tmp_path):
    folder = job_dir(tmp_path / "job", [timed_run(m, seed=i) for i, m in enumerate(MINUTES)])
    report = check_folder(folder, report_dir=folder)
    assert report.passed, report.format()
    assert [r.time_to_train_ms for r in report.runs] == [m * 60_000 for m in MINUTES]
    assert report.score_min == pytest.approx(OLYMPIC, abs=1e-9)
    assert report.global_batch_size == 16
    assert all(r.samples_count == 184_320 and r.steps == 11_520 for r in report.runs)
    assert report.rcp.checked and report.rcp.passed and report.rcp.message == "RCP found"
    # The checker's own olympic means: the runs' samples, and the GBS-16 RCP (20 runs, 17 at 159,744).
    assert report.rcp.submission_mean == 184_320
    assert report.rcp.rcp_mean == pytest.approx((16 * 159_744 + 2 * 172_032) / 18)
    assert report.rcp.norm_factor == 1.0
    assert report.notes == [] and report.problems == []
    assert report.report_files == [folder / REPORT_NAME, folder / EVAL_PLOT_NAME, folder / TIME_PLOT_NAME]
    for png in report.report_files[1:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    markdown = (folder / REPORT_NAME).read_text()
    assert "**result: PASSED**" in markdown
    assert "230.62 min, olympic mean of 10 runs without the best and the worst" in markdown
    assert "| `run_02/mllog.log` | 2 | success | 245.00 min | 184,320 | 11,520 | 5.21 min |" in markdown
    assert f"![eval_accuracy against samples]({EVAL_PLOT_NAME})" in markdown
    assert "RCP check: mlperf_logging" in markdown


def test_runs_faster_than_the_rcp_fail_the_rcp_check(tmp_path):
    fast = [4.6, 4.1, 3.8, 3.6, 3.5, 3.45, 3.41, 3.38, 3.36, 3.34, 3.31, 3.29]  # 147,456 samples
    folder = job_dir(tmp_path / "job", [timed_run(m, seed=i, accuracies=fast) for i, m in enumerate(MINUTES)])
    report = check_folder(folder, report_dir=None)
    assert all(r.passed for r in report.runs)
    assert not report.passed
    assert report.rcp.checked and report.rcp.passed is False
    assert report.rcp.submission_mean == 147_456
    assert report.rcp.min_acceptable_mean is not None and report.rcp.min_acceptable_mean > 147_456
    assert report.problems[0].startswith("RCP check failed: FAILED (RCP found): runs' olympic mean 147,456 samples")
    assert report.report_files == []


def test_runs_slightly_faster_than_the_rcp_mean_get_a_normalization_factor(tmp_path):
    runs = [Run(seed=i) for i in range(10)]  # 159,744 samples: under the RCP mean, within the max speedup
    report = check_folder(job_dir(tmp_path / "job", runs), report_dir=None)
    assert report.passed, report.format()
    assert report.rcp.norm_factor == pytest.approx(report.rcp.rcp_mean / 159_744)
    assert report.rcp.norm_factor > 1.0
    assert "with the RCP normalization factor" in report.format()


def test_submission_layout_with_one_aborted_run(tmp_path):
    folder = tmp_path / "results" / "system" / "llama31_8b"
    for index, minutes in enumerate(MINUTES):
        status = "aborted" if index == 4 else "success"
        write_run(folder / f"result_{index}.txt", timed_run(minutes, seed=index, status=status))
    report = check_folder(folder, report_dir=folder)
    assert [r.passed for r in report.runs] == [i != 4 for i in range(10)]
    assert not report.passed
    # The official scoring counts the failed run as the worst and drops only the best of the rest.
    rest = sorted(m for i, m in enumerate(MINUTES) if i != 4)
    assert report.score_min == pytest.approx(sum(rest[1:]) / 8)
    assert report.rcp.passed is True
    markdown = (folder / REPORT_NAME).read_text()
    assert "**result: FAILED**" in markdown
    assert any(note.startswith("the report sits beside result_*.txt files") for note in report.notes)
    assert f"- `result_4.txt` line {line_of(folder / 'result_4.txt', 'run_stop')}: run_stop status is 'aborted'" in (
        markdown
    )


def count_problem(found: int) -> str:
    """The folder failure for a closed folder of `found` runs (the rules score exactly 10)."""
    fix = f"add the missing {10 - found}" if found < 10 else f"remove {found - 10}"
    return (
        f"{found} run(s) found: a llama31_8b result folder holds exactly 10 runs (mlperf_logging benchmark_meta "
        f"result_file_counts, which the package checker and the result summarizer score on); {fix} (or check "
        "with --profile smoke for a test set)"
    )


def test_the_required_run_count_comes_from_mlperf_logging():
    from mlperf_logging.benchmark_meta import get_result_file_counts

    assert get_result_file_counts("training")["llama31_8b"] == 10


@pytest.mark.parametrize("count", [9, 11])
def test_nine_or_eleven_runs_fail_naming_the_rule(tmp_path, count, capsys):
    minutes = (MINUTES + [229])[:count]
    folder = job_dir(tmp_path / "job", [timed_run(m, seed=i) for i, m in enumerate(minutes)])
    report = check_folder(folder, report_dir=None)
    assert all(run.passed for run in report.runs) and report.rcp.passed is True
    assert not report.passed
    assert report.problems == [count_problem(count)]
    assert f"; {count} runs present, the rules score exactly 10" in report.format()
    assert main([str(folder), "--no-report"]) == 1
    out = capsys.readouterr().out
    assert "result:  FAILED" in out and "holds exactly 10 runs" in out


def test_fewer_than_ten_runs_fail_and_the_partial_score_is_said(tmp_path):
    folder = job_dir(tmp_path / "job", [timed_run(m, seed=i) for i, m in enumerate(MINUTES[:3])])
    report = check_folder(folder, report_dir=None)
    assert not report.passed and all(run.passed for run in report.runs)
    assert report.score_min == 230  # 230, 221, 245: only the middle one stays
    assert report.problems == [count_problem(3)]
    assert report.notes == []
    assert "; 3 runs present, the rules score exactly 10" in report.format()


def test_a_single_run_has_no_score_and_no_rcp_check(tmp_path):
    report = check_folder(job_dir(tmp_path / "job", [timed_run(230, seed=0)]), report_dir=None)
    assert not report.passed and report.runs[0].passed
    assert report.problems == [count_problem(1)]
    assert report.score_min is None and report.mean_min == 230
    assert report.rcp.checked is False and "needs at least 3" in report.rcp.message


def test_the_smoke_profile_only_says_the_run_count(tmp_path):
    report = check_folder(job_dir(tmp_path / "job", [smoke_run()]), profile="smoke", report_dir=None)
    assert report.passed and report.problems == []
    assert report.notes == [
        "1 run(s): a llama31_8b result folder holds exactly 10 runs (mlperf_logging benchmark_meta "
        "result_file_counts, which the package checker and the result summarizer score on); the smoke profile "
        "only says so, and the score and the RCP check describe a partial set",
        "the olympic mean drops the best and the worst run, so it needs at least 3 runs",
    ]


def test_mixed_batch_sizes_and_benchmarks_name_files_and_lines(tmp_path):
    runs = [Run(seed=0), Run(seed=1), Run(seed=2, gbs=32, overrides={"submission_benchmark": "llama31_405b"})]
    folder = job_dir(tmp_path / "job", runs)
    report = check_folder(folder, report_dir=None)
    assert not report.passed
    line = line_of(folder / "run_02" / "mllog.log", "global_batch_size")
    assert report.problems == [
        "the runs mix benchmarks: submission_benchmark 'llama31_8b' in run_00/mllog.log line 3, "
        "run_01/mllog.log line 3; submission_benchmark 'llama31_405b' in run_02/mllog.log line 3; "
        "one folder must hold one submission_benchmark",
        f"the runs mix batch sizes: global_batch_size 16 in run_00/mllog.log line {line}, run_01/mllog.log line "
        f"{line}; global_batch_size 32 in run_02/mllog.log line {line}; one folder must hold one global_batch_size",
        count_problem(3),
    ]
    assert report.score_min is None and not report.rcp.checked


def test_smoke_folder_passes_with_relaxed_rules_listed(tmp_path):
    folder = job_dir(tmp_path / "job", [smoke_run()])
    report = check_folder(folder, profile="smoke", report_dir=folder)
    assert report.passed, report.format()
    assert not report.rcp.checked and "smoke run cannot be compared" in report.rcp.message
    markdown = (folder / REPORT_NAME).read_text()
    assert "## Relaxed rules (smoke profile)" in markdown
    assert "- `max_sequence_length == 8192`:" in markdown


def test_duplicate_log_is_counted_once_and_two_logs_in_a_run_folder_fail(tmp_path):
    folder = job_dir(tmp_path / "job", [Run(seed=0), Run(seed=1), Run(seed=2)])
    # A captured stdout with rank prefixes holds the same events as the run's log.
    log = folder / "run_00" / "mllog.log"
    (folder / "run_00" / "stdout.log").write_text(
        "".join(f"0: {line}\n" if ":::MLLOG" in line else line for line in log.read_text().splitlines())
    )
    report = check_folder(folder, report_dir=None)
    assert len(report.runs) == 3
    assert "run_00/stdout.log: same :::MLLOG lines as run_00/mllog.log; counted once" in report.notes
    assert all(run.passed for run in report.runs) and report.problems == [count_problem(3)]
    # A job-level log beside the run folders echoes every run: not a run itself.
    (folder / "job.log").write_text("".join(p.read_text() for p in sorted(folder.glob("run_*/mllog.log"))))
    report = check_folder(folder, report_dir=None)
    assert len(report.runs) == 3 and report.problems == [count_problem(3)]
    assert "job.log: a *.log beside run folders is taken as a job-level log; not a run" in report.notes
    write_run(folder / "run_01" / "retry.log", Run(seed=9))
    report = check_folder(folder, report_dir=None)
    assert not report.passed
    assert report.problems == [
        "run_01/: one run folder holds 2 different MLPerf logs (mllog.log, retry.log); "
        "a run is one log with one run_start and one run_stop, or the part logs <name>_part<k>.log of one run "
        "split over jobs",
        count_problem(4),
    ]


def test_bad_logs_in_a_folder_are_reported_by_file_and_line(tmp_path, capsys):
    folder = job_dir(tmp_path / "job", [Run(seed=0), Run(seed=1), Run(seed=2, status=None)])
    broken = folder / "run_01" / "mllog.log"
    text = broken.read_text()
    cut = text.rindex(":::MLLOG") + 40
    broken.write_text(text[:cut])  # the run was killed while writing run_stop
    (folder / "run_03").mkdir()
    (folder / "run_03" / "empty.log").write_text("")  # no :::MLLOG lines: not a run
    assert main([str(folder)]) == 1
    out = capsys.readouterr().out
    last = len(text[:cut].splitlines())
    assert "run_01/mllog.log: FAILED" in out
    assert f"line {last}: the file ends in the middle of this :::MLLOG line" in out
    assert "run_02/mllog.log: FAILED" in out and "run_stop is missing (required exactly once)" in out
    assert "Traceback" not in out
    assert (folder / REPORT_NAME).is_file()


def test_flat_folder_of_logs(tmp_path):
    for index, minutes in enumerate(MINUTES[:4]):
        write_run(tmp_path / f"mlperf_llama31_8b_seed{index}.log", timed_run(minutes, seed=index))
    report = check_folder(tmp_path, report_dir=None)
    assert [report.name(r) for r in report.runs] == [f"mlperf_llama31_8b_seed{i}.log" for i in range(4)]
    assert report.score_min == (230 + 228) / 2  # 230, 221, 245, 228 without 221 and 245
    assert all(run.passed for run in report.runs) and report.problems == [count_problem(4)]


def test_empty_folder_and_unwritable_report_dir(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    report = check_folder(tmp_path / "empty", report_dir=tmp_path / "empty")
    assert not report.passed
    assert report.problems[0].startswith(f"{tmp_path / 'empty'}: no MLPerf logs found")
    folder = job_dir(tmp_path / "job", [Run(seed=0)])
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    report = check_folder(folder, report_dir=blocker / "reports")
    assert not report.passed
    assert report.problems[0].startswith(f"could not write the report into {blocker / 'reports'}")


def test_cli_folder_mode_and_shell_wrapper(tmp_path):
    folder = job_dir(tmp_path / "job", [smoke_run(), smoke_run(seed=2)])
    out_dir = tmp_path / "reports"
    done = subprocess.run(
        [
            "bash",
            str(REPO / "compliance" / "check.sh"),
            str(folder),
            "--profile",
            "smoke",
            "--report-dir",
            str(out_dir),
        ],
        capture_output=True,
        text=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Folder: " in done.stdout and "result:  PASSED" in done.stdout
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([REPORT_NAME, EVAL_PLOT_NAME, TIME_PLOT_NAME])
    assert not (folder / REPORT_NAME).exists()
    assert main([str(folder), "--profile", "smoke", "--no-report"]) == 0
