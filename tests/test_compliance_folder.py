"""Tests for `python -m compliance.check FOLDER`: RCP check, olympic score, report files, bad folders.

The logs are written by the helpers in tests/test_compliance_check.py (mlperf_logging's MLLogger,
the benchmark's key order, docs/FIDELITY.md). Run: .venv/bin/python -m pytest tests/test_compliance_folder.py -q
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from compliance.chain import NOT_SUBMITTABLE, ChainReport
from compliance.check import main
from compliance.folder import EVAL_PLOT_NAME, REPORT_NAME, TIME_PLOT_NAME, check_folder
from tests.test_compliance_check import REPO, T0, Run, line_of, smoke_run, write_run

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
    assert report.problems[0] == count_problem(1)
    assert report.problems[1].startswith(f"could not write the report into {blocker / 'reports'}")


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


# Runs split over jobs (the launcher's NPAR > 1) ----------------------------------------------------------------


def write_chain(run_dir: Path, run: Run, split: list[int], gaps_ms: list[int]) -> list[Path]:
    """`run` as the launcher's NPAR jobs: part k holds the next split[k-1] evals, resumes at the samples the
    part before stopped at, starts gaps_ms[k-2] after that part's run_stop, and every part but the last
    pauses (status aborted)."""
    paths, done, start = [], 0, run.start_ms
    for k, count in enumerate(split, start=1):
        part = dataclasses.replace(
            run,
            accuracies=run.accuracies[done : done + count],
            first_samples=done * run.eval_every,
            start_ms=start,
            status=run.status if k == len(split) else "aborted",
            overrides={**run.overrides, "init_checkpoint_step": done * run.eval_every // run.gbs},
        )
        paths.append(write_run(run_dir / f"mlperf_part{k}.log", part))
        done += count
        if k < len(split):
            start = part.end_ms + gaps_ms[k - 1]
    return paths


def chain_rules(run) -> list[str]:
    return [f.rule for f in run.failures if f.origin == "chained run"]


def test_two_part_chain_is_one_run_with_its_gap_apart(tmp_path, capsys):
    folder = tmp_path / "job"
    run = smoke_run()  # evals at 16, 32, 48, 64 samples; the target 7.5 is reached at the fourth
    write_chain(folder / "run01_seed1", run, [2, 2], gaps_ms=[60_000])
    report = check_folder(folder, profile="smoke", report_dir=folder)
    assert report.passed, report.format()
    (chain,) = report.runs
    assert isinstance(chain, ChainReport) and report.name(chain) == "run01_seed1/mlperf_part*.log"
    assert chain.part_numbers == [1, 2] and [p.status for p in chain.parts] == ["aborted", "success"]
    assert chain.status == "success" and chain.passed
    # 4 blocks of 4,000 + 500 ms in all: the two parts' run_start -> run_stop, the gap not counted.
    assert [t.time_to_train_ms for t in chain.part_times] == [9_000, 9_000]
    assert chain.time_to_train_ms == 18_000 == run.time_to_train_ms
    assert chain.gaps_ms == [60_000 + run.init_ms]  # run_stop -> the next part's run_start (its init too)
    assert chain.eval_curve == [(16, 9.1), (32, 8.2), (48, 7.6), (64, 7.2)]
    assert chain.samples_count == 64 and chain.steps == 16 and chain.converged
    assert chain.init_time_ms == run.init_ms
    assert chain.headline() == (
        "PASSED, status success, time to train 18.0 s, 64 samples (16 steps); chained run of 2 parts, "
        "gaps between jobs 62.0 s (not counted); not a submittable MLPerf time"
    )
    assert NOT_SUBMITTABLE in chain.warnings
    assert f"1 run(s) split over jobs (run01_seed1/mlperf_part*.log): {NOT_SUBMITTABLE}" in report.notes
    text = chain.format()
    assert "    part 1: mlperf_part1.log, status aborted, run_start -> run_stop 9.0 s, samples 0 -> 32" in text
    assert "      gap to the next job: 62.0 s (queue wait, job start and the next part's init; not counted)" in text
    assert "    part 2: mlperf_part2.log, status success, run_start -> run_stop 9.0 s, samples 32 -> 64" in text
    markdown = (folder / REPORT_NAME).read_text()
    assert "## Runs split over jobs" in markdown
    assert "| `run01_seed1/mlperf_part*.log` | 1 | aborted | 9.0 s | 0 -> 32 | 62.0 s |" in markdown
    assert "| `run01_seed1/mlperf_part*.log` | 2 | success | 9.0 s | 32 -> 64 |  |" in markdown
    for png in (folder / EVAL_PLOT_NAME, folder / TIME_PLOT_NAME):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([str(folder), "--profile", "smoke", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "run01_seed1/mlperf_part*.log: PASSED" in out and "runs:    1 found, 1 passed" in out


def test_ten_three_part_runs_are_scored_as_ten_runs(tmp_path):
    folder = tmp_path / "job"
    for index, minutes in enumerate(MINUTES):
        write_chain(folder / f"run{index + 1:02d}", timed_run(minutes, seed=index), [5, 5, 5], [300_000, 7_000])
    report = check_folder(folder, report_dir=folder)
    assert [len(run.parts) for run in report.runs] == [3] * 10
    assert report.passed, report.format()
    assert report.problems == []
    assert [run.time_to_train_ms for run in report.runs] == [m * 60_000 for m in MINUTES]
    assert all(run.gaps_ms == [300_000 + 312_345, 7_000 + 312_345] for run in report.runs)
    assert report.score_min == pytest.approx(OLYMPIC, abs=1e-9)
    # The RCP checker reads each run's last part: its converging eval is at the run's samples_count.
    assert report.rcp.passed and report.rcp.submission_mean == 184_320
    assert report.format().count("parts; not a submittable MLPerf time") == 0
    assert report.format().count("(not counted); not a submittable MLPerf time\n") == 10
    assert "includes run(s) split over jobs: not a submittable MLPerf score" in report.format()


def test_a_missing_part_fails_the_run_not_the_count(tmp_path):
    folder = tmp_path / "job"
    parts = write_chain(folder / "run01", smoke_run(), [1, 2, 1], gaps_ms=[1_000, 1_000])
    parts[1].unlink()
    report = check_folder(folder, profile="smoke", report_dir=None)
    (chain,) = report.runs
    assert not chain.passed and not report.passed
    assert chain.part_numbers == [1, 3]
    assert chain_rules(chain) == [
        "part(s) 2 missing: found parts 1, 3; a run split over jobs has its parts numbered 1, 2, ... with none "
        "left out (was a job's log deleted, or did its job never start?)",
        "mlperf_part3.log starts training at samples_count 48 but mlperf_part1.log stopped at 16: the parts are "
        "out of order, one is missing, or a part did not resume from the checkpoint the one before it saved",
    ]
    # Part 1's pause is not confirmed by a part that continues it: its status counts against the run.
    (status,) = [f for f in chain.failures if f.origin == "run summary"]
    assert status.file == "mlperf_part1.log" and status.rule.startswith("run_stop status is 'aborted'")
    assert status.format().startswith(f"mlperf_part1.log line {line_of(parts[0], 'run_stop')}: run_stop status")


def test_parts_out_of_order_fail(tmp_path):
    folder = tmp_path / "job"
    first, second = write_chain(folder / "run01", smoke_run(), [2, 2], gaps_ms=[5_000])
    swap = folder / "run01" / "swap"
    first.rename(swap)
    second.rename(first)
    swap.rename(second)
    report = check_folder(folder, profile="smoke", report_dir=None)
    (chain,) = report.runs
    assert not report.passed
    second_stop = T0 + 2 * (2_000 + 9_000) + 5_000  # the second half's run_stop, now in mlperf_part1.log
    assert chain_rules(chain) == [
        "mlperf_part1.log stopped with status 'success' (the run reached its target) but mlperf_part2.log "
        "follows; a run ends at its target, so the later part belongs to another run",
        "mlperf_part2.log starts training at samples_count 0 but mlperf_part1.log stopped at 64: the parts are "
        "out of order, one is missing, or a part did not resume from the checkpoint the one before it saved",
        f"mlperf_part2.log starts ({T0:,} ms) before mlperf_part1.log's run_stop ({second_stop:,} ms): "
        "the parts overlap or are out of order; each job starts after the one before it ended",
    ]
    assert chain.status == "aborted"  # the run's status is its last part's


def test_three_parts_without_the_target_and_a_changed_seed(tmp_path):
    folder = tmp_path / "job"
    run = smoke_run(status="aborted", accuracies=[9.1, 8.2, 7.9, 7.7, 7.6, 7.55])
    parts = write_chain(folder / "run01", run, [2, 2, 2], gaps_ms=[0, 0])
    report = check_folder(folder, profile="smoke", report_dir=None)
    (chain,) = report.runs
    assert not chain.passed and chain_rules(chain) == []
    assert chain.time_to_train_ms == 27_000 and chain.gaps_ms == [2_000, 2_000]
    # Parts 1 and 2 paused and were continued; the last one's missed target and aborted stop are the run's.
    last_eval, stop = line_of(parts[2], "eval_accuracy", 1), line_of(parts[2], "run_stop")
    assert [(f.file, f.line, f.origin) for f in chain.failures] == [
        ("mlperf_part3.log", last_eval, "official checker"),
        ("mlperf_part3.log", stop, "run summary"),
    ]
    assert chain.failures[0].rule.startswith("no eval_accuracy reached the target (<= 7.5); best was 7.55")
    assert chain.failures[1].rule.startswith("run_stop status is 'aborted' and no eval_accuracy reached the target")
    write_run(
        parts[1],
        dataclasses.replace(
            run, accuracies=[7.9, 7.7], first_samples=32, status="aborted", seed=5, start_ms=T0 + 11_000
        ),
    )
    (chain,) = check_folder(folder, profile="smoke", report_dir=None).runs
    assert chain_rules(chain) == [
        "the parts differ in seed (1 in mlperf_part1.log, mlperf_part3.log; 5 in mlperf_part2.log): the parts "
        "of one run share every setting"
    ]


def test_a_chain_beside_single_runs_and_a_one_part_chain(tmp_path):
    folder = job_dir(tmp_path / "job", [smoke_run(seed=7)])
    write_chain(folder / "run02", smoke_run(seed=8), [1, 3], gaps_ms=[0])
    write_chain(folder / "run03", smoke_run(seed=9), [4], gaps_ms=[])  # reached its target in part 1
    report = check_folder(folder, profile="smoke", report_dir=None)
    assert report.passed, report.format()
    assert [report.name(run) for run in report.runs] == [
        "run02/mlperf_part*.log",
        "run03/mlperf_part*.log",
        "run_00/mllog.log",
    ]
    assert [len(getattr(run, "parts", [])) for run in report.runs] == [2, 1, 0]
    # A chain and a single log in one run folder are two runs there: that is a folder failure.
    write_run(folder / "run02" / "mlperf.log", smoke_run(seed=8))
    report = check_folder(folder, profile="smoke", report_dir=None)
    assert report.problems == [
        "run02/: one run folder holds 2 different MLPerf logs (mlperf.log, mlperf_part*.log); a run is one log "
        "with one run_start and one run_stop, or the part logs <name>_part<k>.log of one run split over jobs"
    ]


# The profile the launcher records --------------------------------------------------------------------------


def test_the_recorded_profile_applies_without_profile(tmp_path, capsys):
    folder = tmp_path / "job"
    write_chain(folder / "run01_seed1", smoke_run(), [2, 2], gaps_ms=[0])
    assert main([str(folder), "--no-report"]) == 1  # nothing recorded: the official rules, which a smoke run fails
    capsys.readouterr()
    (folder / "compliance_profile.txt").write_text("smoke\n")
    assert main([str(folder), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"profile smoke: recorded by the launcher in {folder / 'compliance_profile.txt'}")
    # A log of the run folder below finds it too, and --profile still decides.
    assert main([str(folder / "run01_seed1" / "mlperf_part2.log")]) == 0
    assert main([str(folder), "--profile", "closed", "--no-report"]) == 1


def test_a_bad_recorded_profile_is_a_usage_error(tmp_path, capsys):
    folder = job_dir(tmp_path / "job", [smoke_run()])
    (folder / "compliance_profile.txt").write_text("smok\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(folder)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{folder / 'compliance_profile.txt'} names the profile 'smok'; it must hold one of closed, smoke" in err
    assert "Traceback" not in err
    assert main([str(folder), "--profile", "smoke", "--no-report"]) == 0


def test_the_plots_draw_a_chain_as_one_curve_and_one_stacked_bar(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from compliance import plots

    folder = job_dir(tmp_path / "job", [smoke_run(seed=7)])
    write_chain(folder / "run02", smoke_run(seed=8), [1, 2, 1], gaps_ms=[50_000, 50_000])
    report = check_folder(folder, profile="smoke", report_dir=None)
    figures = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **kw: figures.append(fig))
    plots.eval_curves(report, tmp_path / "eval.png")
    plots.times_to_train(report, tmp_path / "time.png")
    curves, bars = figures[0].axes[0], figures[1].axes[0]
    runs = [line for line in curves.lines if not line.get_label().startswith("target")]
    assert [line.get_label() for line in runs] == ["run02/mlperf_part*.log (3 parts)", "run_00/mllog.log"]
    assert list(runs[0].get_xdata()) == [16, 32, 48, 64]  # the three parts' evals, one curve
    # Three stacked segments on the chain's bar (its parts' run_start -> run_stop, no gaps), one for the run.
    segments = [(p.get_x(), p.get_y(), p.get_height()) for p in bars.patches]
    assert [(x, round(y * 60_000), round(h * 60_000)) for x, y, h in segments] == [
        (-0.4, 0, 4_500),
        (-0.4, 4_500, 9_000),
        (-0.4, 13_500, 4_500),
        (0.6, 0, 18_000),
    ]
    assert "1 split over jobs (stacked parts, not submittable)" in bars.get_title()
