"""Tests for compliance.check on one log: an 8B-shaped passing run, the smoke profile, bad input.

Logs are written here with mlperf_logging's own MLLogger (or as raw `:::MLLOG` lines for the
malformed cases), with the run-start keys in the order the project logs them; no published log
is used.
Run: .venv/bin/python -m pytest tests/test_compliance_check.py -q
"""

from __future__ import annotations

import json
import logging
import math
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlperf_logging.compliance_checker import mlp_compliance
from mlperf_logging.mllog import mllog

from compliance import rules
from compliance.check import check_log, main
from compliance.rcp import rcp_batch_sizes, reference_point

REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000  # an arbitrary epoch in ms
EVAL_EVERY = 12_288  # samples between evals (docs/FIDELITY.md)


@dataclass
class Run:
    """Shape of a synthetic run; the defaults are a passing 8B run at GBS 16."""

    accuracies: list[float] = field(
        default_factory=lambda: [4.6, 4.1, 3.8, 3.6, 3.5, 3.45, 3.41, 3.38, 3.36, 3.34, 3.32, 3.31, 3.29]
    )
    gbs: int = 16
    seed: int = 1
    status: str | None = "success"
    init_ms: int = 312_345
    block_ms: int = 1_000_003  # training time per eval interval
    eval_ms: int = 20_011
    eval_every: int = EVAL_EVERY
    start_ms: int = T0
    first_samples: int = 0  # samples_count at run_start (a resumed part of a chained run starts later)
    overrides: dict = field(default_factory=dict)  # hyperparameter key -> value (None drops the key)
    step_time_s: float | None = 1.25  # tracked_stats train_step_time, None for no tracked_stats

    def hyperparameters(self) -> list[tuple[str, object]]:
        """The keys between init_start and init_stop, in the order the project logs them."""
        point = reference_point(self.gbs) if self.gbs in rcp_batch_sizes() else None
        warmup = math.ceil(point.warmup_samples / self.gbs) if point else 16  # the RCP runs' warmup steps
        keys = [
            ("submission_benchmark", "llama31_8b"),
            ("submission_org", "reference"),
            ("submission_division", "closed"),
            ("submission_status", "onprem"),
            ("submission_platform", "8xH100"),
            ("seed", self.seed),
            ("global_batch_size", self.gbs),
            ("gradient_accumulation_steps", 1),
            ("max_sequence_length", 8192),
            ("eval_samples", 1024),
            ("train_samples", 7_400_000),
            ("init_checkpoint_step", 0),
            ("opt_name", "adamw"),
            ("opt_base_learning_rate", 4e-4),
            ("opt_adamw_beta_1", 0.9),
            ("opt_adamw_beta_2", 0.95),
            ("opt_adamw_epsilon", 1e-05),
            ("opt_adamw_weight_decay", 0.1),
            ("opt_gradient_clip_norm", 1.0),
            ("opt_end_learning_rate", 4e-5),
            ("opt_learning_rate_warmup_steps", warmup),
            ("opt_learning_rate_decay_steps", 1_200_000 - warmup),
            ("max_steps", 1_200_000),
            ("opt_learning_rate_decay_schedule", "cosine with linear warmup"),
            ("target_accuracy", 3.3),
        ]
        keys = [(k, self.overrides.get(k, v)) for k, v in keys]
        return [(k, v) for k, v in keys if v is not None]

    @property
    def time_to_train_ms(self) -> int:
        return len(self.accuracies) * (self.block_ms + self.eval_ms)

    @property
    def samples(self) -> int:
        return self.first_samples + len(self.accuracies) * self.eval_every

    @property
    def end_ms(self) -> int:
        """time_ms of run_stop."""
        return self.start_ms + self.init_ms + self.time_to_train_ms


def smoke_run(**changes) -> Run:
    """A run shaped like the CPU smoke default: short sequences, few eval samples, own target."""
    run = Run(
        accuracies=[9.1, 8.2, 7.6, 7.2],
        gbs=4,
        eval_every=16,
        block_ms=4_000,
        eval_ms=500,
        init_ms=2_000,
        overrides={
            "max_sequence_length": 256,
            "eval_samples": 64,
            "max_steps": 20,
            "opt_learning_rate_warmup_steps": 2,
            "opt_learning_rate_decay_steps": 18,
            "target_accuracy": 7.5,
        },
    )
    for name, value in changes.items():
        if name == "overrides":
            run.overrides.update(value)
        else:
            setattr(run, name, value)
    return run


def write_run(path: Path, run: Run) -> Path:
    """Write `run` as an MLPerf log with mlperf_logging's MLLogger (explicit timestamps)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"compliance-test-{path}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(path, mode="w")
    logger.addHandler(handler)
    try:
        ml = mllog.MLLogger(logger=logger)
        t = run.start_ms
        ml.event("cache_clear", True, time_ms=t)
        ml.start("init_start", time_ms=t)
        for key, value in run.hyperparameters():
            ml.event(key, value, time_ms=t)
        t += run.init_ms
        ml.end("init_stop", time_ms=t)
        ml.start("run_start", time_ms=t)
        samples = run.first_samples
        for accuracy in run.accuracies:
            ml.start("block_start", metadata={"samples_count": samples}, time_ms=t)
            t += run.block_ms
            samples += run.eval_every
            if run.step_time_s is not None:
                ml.event(
                    "tracked_stats",
                    {"train_step_time": run.step_time_s, "train_loss": accuracy + 0.05},
                    metadata={"step": samples},
                    time_ms=t,
                )
            ml.end("block_stop", metadata={"samples_count": samples}, time_ms=t)
            ml.start("eval_start", metadata={"samples_count": samples}, time_ms=t)
            t += run.eval_ms
            ml.end("eval_stop", metadata={"samples_count": samples}, time_ms=t)
            ml.event("eval_accuracy", accuracy, metadata={"samples_count": samples}, time_ms=t)
        if run.status is not None:
            ml.end("run_stop", metadata={"samples_count": samples, "status": run.status}, time_ms=t)
    finally:
        logger.removeHandler(handler)
        handler.close()
    return path


def mllog_line(
    key: str, value=None, time_ms: int = T0, metadata: dict | None = None, event_type: str = "POINT_IN_TIME"
) -> str:
    """One `:::MLLOG` line formatted by hand, for edits the official writer would not make."""
    record = {
        "namespace": "",
        "time_ms": time_ms,
        "event_type": event_type,
        "key": key,
        "value": value,
        "metadata": {"file": "test.py", "lineno": 1, **(metadata or {})},
    }
    return ":::MLLOG " + json.dumps(record)


def line_of(path: Path, key: str, nth: int = 0) -> int:
    """1-based file line of the nth `:::MLLOG` line with this key."""
    hits = [i for i, text in enumerate(path.read_text().splitlines(), start=1) if f'"key": "{key}"' in text]
    return hits[nth]


def rules_failed(report) -> list[str]:
    return [f.rule for f in report.failures]


# A passing 8B-shaped run ---------------------------------------------------------------------------------


def test_passing_8b_run_summary_values(tmp_path):
    run = Run()
    log = write_run(tmp_path / "run.log", run)
    report = check_log(log)
    assert report.passed, report.format()
    assert report.failures == []
    assert report.status == "success"
    assert report.time_to_train_ms == 13 * (1_000_003 + 20_011) == 13_260_182
    assert report.init_time_ms == 312_345
    assert report.init_within_limit is True
    assert report.samples_count == 13 * 12_288 == 159_744
    assert report.steps == 159_744 // 16 == 9_984
    assert report.global_batch_size == 16
    assert report.converged is True
    assert report.target_accuracy == 3.3
    assert report.eval_curve[0] == (12_288, 4.6)
    assert report.eval_curve[-1] == (159_744, 3.29)
    assert len(report.eval_curve) == 13
    assert report.step_time is not None and report.step_time.median_s == 1.25 and report.step_time.events == 13
    assert report.train_loss == pytest.approx(3.34)
    assert report.ruleset == "6.0.0" and report.profile == "closed"
    assert report.relaxed_rules == []


def test_passing_run_agrees_with_the_official_checker_run_directly(tmp_path):
    log = write_run(tmp_path / "run.log", Run())
    checker = mlp_compliance.make_checker("training", "6.0.0", quiet=False, werror=False)
    mlp_compliance.enqueued_configs.clear()
    assert checker.check_file(str(log), "training_6.0.0/common.yaml")
    assert check_log(log).passed


def test_format_is_a_readable_summary(tmp_path):
    report = check_log(write_run(tmp_path / "run.log", Run()))
    text = report.format()
    assert "PASSED" in text
    assert "13,260,182 ms = 221.00 min" in text
    assert "312,345 ms" in text and "within the 30-min limit" in text
    assert "159,744 samples = 9,984 steps (global_batch_size 16)" in text
    assert "median 1.250 s" in text
    assert "159,744  3.2900  <= target" in text


def test_check_log_prints_nothing_and_restores_logging(tmp_path, capsys):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    check_log(write_run(tmp_path / "run.log", Run(status="aborted")))
    assert capsys.readouterr() == ("", "")
    assert root.handlers == handlers and root.level == level


def test_other_rulesets_are_selectable(tmp_path):
    log = write_run(tmp_path / "run.log", Run())
    assert check_log(log, ruleset="5.1.0").passed
    # 6.1.0 makes the precision and parallelism disclosure keys mandatory; the 6.0.0 key list lacks them.
    report = check_log(log, ruleset="6.1.0")
    assert not report.passed
    assert "tensor_parallelism is missing (required exactly once)" in rules_failed(report)
    with pytest.raises(ValueError, match="ruleset"):
        check_log(log, ruleset="4.0.0")
    with pytest.raises(ValueError, match="profile"):
        check_log(log, profile="open")


# Runs that do not count --------------------------------------------------------------------------------


def test_aborted_run_without_eval_under_target_says_both(tmp_path):
    run = Run(accuracies=[4.6, 4.1, 3.8], status="aborted")
    log = write_run(tmp_path / "run.log", run)
    report = check_log(log)
    assert not report.passed
    assert report.status == "aborted"
    assert report.converged is False
    assert report.samples_count == 3 * 12_288
    by_line = {f.line: f.rule for f in report.failures}
    assert by_line[line_of(log, "run_stop")].startswith(
        "run_stop status is 'aborted' and no eval_accuracy reached the target"
    )
    target_failure = by_line[line_of(log, "eval_accuracy", nth=-1)]
    assert target_failure.startswith(
        "no eval_accuracy reached the target (<= 3.3); best was 3.8 at samples_count 36864"
    )


def test_success_status_without_eval_under_target_fails_on_the_official_rule(tmp_path):
    log = write_run(tmp_path / "run.log", Run(accuracies=[4.6, 3.31]))
    report = check_log(log)
    assert not report.passed
    assert [f.origin for f in report.failures] == ["official checker"]
    assert report.failures[0].line == line_of(log, "eval_accuracy", nth=-1)
    assert "best was 3.31" in report.failures[0].rule


def test_init_over_30_minutes_fails(tmp_path):
    log = write_run(tmp_path / "run.log", Run(init_ms=31 * 60_000))
    report = check_log(log)
    assert report.init_within_limit is False
    assert [(f.line, f.rule) for f in report.failures] == [
        (
            line_of(log, "init_stop"),
            "init_stop must come within the division's init time limit of the first init_start; here it took 31.0 min",
        )
    ]


def test_wrong_hyperparameter_is_named_with_its_line(tmp_path):
    log = write_run(tmp_path / "run.log", Run(overrides={"opt_adamw_beta_2": 0.99}))
    report = check_log(log)
    assert [(f.line, f.rule) for f in report.failures] == [
        (line_of(log, "opt_adamw_beta_2"), "opt_adamw_beta_2 must be 0.95 (the log has 0.99)")
    ]


def test_open_division_and_other_benchmark_are_out_of_profile(tmp_path):
    log = write_run(tmp_path / "run.log", Run(overrides={"submission_division": "open"}))
    report = check_log(log)
    assert (
        line_of(log, "submission_division"),
        "submission_division is 'open'; the closed profile checks closed-division logs",
    ) in [(f.line, f.rule) for f in report.failures]
    log = write_run(tmp_path / "other.log", Run(overrides={"submission_benchmark": "llama31_405b"}))
    report = check_log(log)
    assert "submission_benchmark is 'llama31_405b'; this tool checks llama31_8b logs" in rules_failed(report)


# The smoke profile -------------------------------------------------------------------------------------


def test_smoke_log_passes_the_smoke_profile_and_lists_relaxed_rules(tmp_path):
    log = write_run(tmp_path / "smoke.log", smoke_run())
    report = check_log(log, profile="smoke")
    assert report.passed, report.format()
    assert report.target_accuracy == 7.5
    assert report.samples_count == 4 * 16 and report.steps == 16
    assert report.eval_curve[-1] == (64, 7.2)
    assert [r.name for r in report.relaxed_rules] == [
        "max_sequence_length == 8192",
        "opt_learning_rate_decay_steps == 1200000 - opt_learning_rate_warmup_steps",
        "eval_samples == 1024",
        "eval_accuracy <= 3.3 at least once",
        "max_steps == 1200000",
    ]
    text = report.format()
    assert "relaxed rules (smoke profile):" in text and "- max_steps == 1200000: " in text


def test_smoke_log_fails_closed_on_exactly_the_scale_rules(tmp_path):
    log = write_run(tmp_path / "smoke.log", smoke_run())
    report = check_log(log, profile="closed")
    assert [(f.line, f.rule) for f in report.failures] == [
        (line_of(log, "max_sequence_length"), "max_sequence_length must be 8192 (the log has 256)"),
        (line_of(log, "eval_samples"), "eval_samples must be 1024 (the log has 64)"),
        (
            line_of(log, "opt_learning_rate_decay_steps"),
            "opt_learning_rate_decay_steps must equal 1,200,000 - opt_learning_rate_warmup_steps (the log has 18)",
        ),
        (line_of(log, "max_steps"), "max_steps must be 1200000 (the log has 20)"),
        (
            line_of(log, "eval_accuracy", nth=-1),
            "no eval_accuracy reached the target (<= 3.3); best was 7.2 at samples_count 64 (line "
            f"{line_of(log, 'eval_accuracy', nth=-1)})",
        ),
    ]


def test_smoke_profile_checks_decay_steps_against_the_logs_max_steps(tmp_path):
    log = write_run(tmp_path / "smoke.log", smoke_run(overrides={"opt_learning_rate_decay_steps": 17}))
    report = check_log(log, profile="smoke")
    assert [(f.line, f.rule) for f in report.failures] == [
        (
            line_of(log, "opt_learning_rate_decay_steps"),
            "opt_learning_rate_decay_steps must equal max_steps - opt_learning_rate_warmup_steps "
            "(the log has opt_learning_rate_decay_steps 17, max_steps 20, opt_learning_rate_warmup_steps 2)",
        )
    ]


def test_smoke_profile_uses_the_logs_target(tmp_path):
    log = write_run(tmp_path / "smoke.log", smoke_run(overrides={"target_accuracy": 7.0}, status="aborted"))
    report = check_log(log, profile="smoke")
    assert report.target_accuracy == 7.0 and report.converged is False
    assert "no eval_accuracy reached the target (<= 7); best was 7.2 at samples_count 64" in report.failures[0].rule
    assert report.failures[1].rule.startswith("run_stop status is 'aborted'")


def test_smoke_profile_needs_a_target(tmp_path):
    log = write_run(tmp_path / "smoke.log", smoke_run(overrides={"target_accuracy": None}))
    report = check_log(log, profile="smoke")
    assert report.target_accuracy is None
    assert "target_accuracy is missing (required exactly once)" in rules_failed(report)
    assert any(
        r.startswith("no eval_accuracy reached the target (<= the log's target_accuracy (which is missing))")
        for r in rules_failed(report)
    )


def test_smoke_rules_differ_from_the_official_files_only_in_the_relaxed_rules(tmp_path):
    common = rules.build_smoke_rules("6.0.0", tmp_path)
    official = rules.official_rules_dir("6.0.0")
    changed = []
    for copy in sorted(common.parent.glob("*.yaml")):
        original = (official / copy.name).read_text()
        redirected = copy.read_text().replace(f"{tmp_path.resolve().as_posix()}/", "")
        if copy.name != "closed_llama31_8b.yaml":
            assert redirected == original, copy.name
        else:
            changed.append(copy.name)
    assert changed == ["closed_llama31_8b.yaml"]
    relaxed = rules._load_records(common.parent / "closed_llama31_8b.yaml")
    strict = rules._load_records(official / "closed_llama31_8b.yaml")
    names = {r["KEY"]["NAME"] for r in strict}
    untouched = names - {
        "max_sequence_length",
        "eval_samples",
        "max_steps",
        "opt_learning_rate_decay_steps",
        "eval_accuracy",
    }
    for name in untouched:
        assert rules._key_record(relaxed, name) == rules._key_record(strict, name), name


def test_smoke_profile_refuses_an_official_rule_it_does_not_know(tmp_path):
    records = rules._load_records(rules.official_rules_dir("6.0.0") / "closed_llama31_8b.yaml")
    rules._key_record(records, "max_steps")["CHECK"] = " v['value'] == 2400000 "
    with pytest.raises(rules.RulesetError, match="max_steps CHECK"):
        rules._relax_llama31_8b(records, tmp_path / "closed_llama31_8b.yaml")


# Bad input: a message naming the line, never a traceback -------------------------------------------------


def test_truncated_final_line(tmp_path):
    log = write_run(tmp_path / "run.log", Run())
    text = log.read_text()
    log.write_text(text + mllog_line("tracked_stats", {"train_step_time": 1.0})[:60])
    report = check_log(log)
    assert not report.passed
    last = len(text.splitlines()) + 1
    assert [(f.line, f.origin) for f in report.failures] == [(last, "log file")]
    assert "file ends in the middle of this :::MLLOG line" in report.failures[0].rule
    # The rest of the log is still summarized.
    assert report.time_to_train_ms == Run().time_to_train_ms


def test_non_json_line_and_other_unreadable_lines(tmp_path):
    log = write_run(tmp_path / "run.log", Run())
    lines = log.read_text().splitlines()
    lines.insert(5, "0: :::MLLOG {this is not json}")
    lines.insert(6, ":::MLLOG [1, 2, 3]")
    lines.insert(7, ':::MLLOG {"key": "seed", "value": 1, "metadata": {}}')
    lines.insert(8, mllog_line("eval_accuracy", "3.2", metadata={"samples_count": 1}))
    lines.insert(9, "plain text is ignored, as the official parser ignores it")
    log.write_text("\n".join(lines) + "\n")
    report = check_log(log)
    assert [(f.line, f.rule) for f in report.failures] == [
        (
            6,
            "this :::MLLOG line is not valid JSON (Expecting property name enclosed in double quotes, at character 2 "
            "of the JSON)",
        ),
        (7, "this :::MLLOG line holds a JSON list, not an object"),
        (8, "this :::MLLOG line lacks the field(s) 'time_ms'"),
        (9, "'eval_accuracy': its value is not a number: '3.2'"),
    ]


def test_missing_run_stop(tmp_path):
    log = write_run(tmp_path / "run.log", Run(status=None))
    report = check_log(log)
    assert report.time_to_train_ms is None and report.status is None
    last = len(log.read_text().splitlines())
    assert [(f.line, f.rule) for f in report.failures] == [(last, "run_stop is missing (required exactly once)")]
    assert "time to train: n/a" in report.format()


def test_two_run_starts(tmp_path):
    log = write_run(tmp_path / "run.log", Run())
    lines = log.read_text().splitlines()
    first = line_of(log, "run_start")
    lines.insert(first + 3, lines[first - 1])
    log.write_text("\n".join(lines) + "\n")
    report = check_log(log)
    assert not report.passed
    assert [(f.line, f.origin) for f in report.failures] == [(first + 4, "run summary")]
    assert report.failures[0].rule == (
        f"run_start appears 2 times with the same value (lines {first}, {first + 4}); "
        "the rules ask for exactly one: the time to train would be ambiguous"
    )


def test_run_stop_before_run_start_fails_naming_the_rule(tmp_path, capsys):
    log = write_run(tmp_path / "run.log", Run())
    start, stop = line_of(log, "run_start"), line_of(log, "run_stop")
    lines = log.read_text().splitlines()
    record = json.loads(lines[stop - 1].split(":::MLLOG ", 1)[1])
    record["time_ms"] = T0 + 312_345 - 1_500  # 1.5 s before run_start, still after every other line in the file
    lines[stop - 1] = ":::MLLOG " + json.dumps(record)
    log.write_text("\n".join(lines) + "\n")
    report = check_log(log)
    assert not report.passed
    assert report.time_to_train_ms == -1_500
    assert [(f.line, f.origin, f.rule) for f in report.failures] == [
        (
            stop,
            "run summary",
            "run_stop must not come before run_start in time (time to train = run_stop - run_start): run_stop's "
            f"time_ms 1,700,000,310,845 is 1,500 ms before run_start's (line {start}), a negative time to train; "
            "check the clock of the machine that wrote the log",
        )
    ]
    assert main([str(log)]) == 1
    assert "run_stop must not come before run_start in time" in capsys.readouterr().out
    # Equal times are a zero time to train, not a negative one.
    record["time_ms"] = T0 + 312_345
    lines[stop - 1] = ":::MLLOG " + json.dumps(record)
    log.write_text("\n".join(lines) + "\n")
    report = check_log(log)
    assert report.time_to_train_ms == 0
    assert "run_stop must not come before run_start" not in "".join(f.rule for f in report.failures)


@pytest.mark.parametrize("content", ["", "\n\n", "no mllog lines here\n"])
def test_empty_file(tmp_path, content):
    log = tmp_path / "empty.log"
    log.write_text(content)
    report = check_log(log)
    assert not report.passed
    assert rules_failed(report) == [
        "the file has no :::MLLOG lines (empty, or not an MLPerf log); the official checker was not run"
    ]


def test_unreadable_path_is_a_failure_not_an_exception(tmp_path):
    report = check_log(tmp_path / "missing.log")
    assert not report.passed
    assert "cannot read the file" in report.failures[0].rule


# Command line ------------------------------------------------------------------------------------------


def test_cli_exit_codes_and_output(tmp_path, capsys):
    good = write_run(tmp_path / "good.log", Run())
    bad = write_run(tmp_path / "bad.log", Run(status="aborted"))
    assert main([str(good)]) == 0
    assert "PASSED" in capsys.readouterr().out
    assert main([str(bad), "--verbose"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "run_stop status is 'aborted'" in out
    assert main([str(write_run(tmp_path / "smoke.log", smoke_run())), "--profile", "smoke"]) == 0
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nope.log")])
    assert exit_info.value.code == 2


def test_module_and_shell_entry_points(tmp_path):
    good = write_run(tmp_path / "good.log", Run())
    help_text = subprocess.run(
        [sys.executable, "-m", "compliance.check", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--profile" in help_text and "smoke" in help_text and "--ruleset" in help_text
    done = subprocess.run(
        ["bash", str(REPO / "compliance" / "check.sh"), str(good)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert "PASSED" in done.stdout and done.stderr == ""


def test_mangled_logs_never_raise(tmp_path):
    """Seeded random damage (cut, dropped, repeated lines; odd values; stray bytes) is always reported."""
    rnd = random.Random(0)
    base = write_run(tmp_path / "base.log", Run()).read_text().splitlines()
    odd_values = [None, True, "x", [], {}, -1, "3.2", {"a": 1}, float("nan")]
    for case in range(12):
        lines = list(base)
        for _ in range(rnd.randint(1, 4)):
            j = rnd.randrange(len(lines))
            action = rnd.randrange(5)
            if action == 0:
                lines[j] = lines[j][: rnd.randrange(len(lines[j]))]
            elif action == 1:
                del lines[j]
            elif action == 2:
                lines.insert(j, lines[rnd.randrange(len(lines))])
            elif action == 3:
                record = json.loads(lines[j].split(":::MLLOG ", 1)[1]) if ":::MLLOG {" in lines[j] else None
                if isinstance(record, dict):
                    record[rnd.choice(["value", "metadata", "time_ms", "key"])] = rnd.choice(odd_values)
                    lines[j] = ":::MLLOG " + json.dumps(record)
            else:
                lines[j] = "\x00\xff" + lines[j]
        log = tmp_path / f"mangled_{case}.log"
        log.write_text("\n".join(lines), encoding="latin-1")
        for profile in ("closed", "smoke"):
            report = check_log(log, profile=profile)
            assert report.format() and report.headline()
            assert all(f.line is not None for f in report.failures if f.origin == "log file")
