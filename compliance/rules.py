"""The official `mlperf_logging` compliance rules for llama31_8b, and the relaxed `smoke` copy.

Profiles:

* ``closed``: the rule files exactly as `mlperf-logging` ships them (`training_<ruleset>/`).
* ``smoke``: the same files copied to a temporary folder, with only the checks that encode the 8B
  scale changed in `closed_llama31_8b.yaml` (see SMOKE_RELAXATIONS). The official checker then
  runs on that copy, so every other rule is still the official one.

The checker itself (`mlp_compliance.ComplianceChecker`) is used as a library; its messages are
collected as data (not scraped from its logging output) and handed to `compliance.messages`.
"""

from __future__ import annotations

import importlib
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml
from mlperf_logging.compliance_checker import mlp_compliance

BENCHMARK = "llama31_8b"
USAGE = "training"
RULESETS = ("5.1.0", "6.0.0", "6.1.0")
DEFAULT_RULESET = "6.0.0"
PROFILES = ("closed", "smoke")
DEFAULT_PROFILE = "closed"
# The launcher (run_llama31.sh) writes the profile its runs are checked with into JOB_DIR under this
# name (the smoke preset: smoke; every other preset: closed); compliance.check reads it when
# --profile is not given.
PROFILE_FILE = "compliance_profile.txt"

_CHECKER_DIR = Path(mlp_compliance.__file__).resolve().parent


@dataclass(frozen=True)
class RelaxedRule:
    """An official rule the smoke profile changes, and why."""

    name: str
    reason: str


# What the smoke profile changes, in the order of closed_llama31_8b.yaml. Each entry below is
# applied by _relax_llama31_8b, which first verifies that the official file still says what these
# names claim, so a future mlperf-logging release cannot be relaxed by accident.
SMOKE_RELAXATIONS: tuple[RelaxedRule, ...] = (
    RelaxedRule(
        "max_sequence_length == 8192",
        "the CPU smoke run trains on short sequences; the key must still be logged exactly once",
    ),
    RelaxedRule(
        "opt_learning_rate_decay_steps == 1200000 - opt_learning_rate_warmup_steps",
        "checked as max_steps - opt_learning_rate_warmup_steps with the log's own max_steps "
        "(at the end of the log, because max_steps is logged after the decay steps)",
    ),
    RelaxedRule(
        "eval_samples == 1024",
        "the smoke run evaluates a few sequences; the key must still be logged exactly once",
    ),
    RelaxedRule(
        "eval_accuracy <= 3.3 at least once",
        "checked against the log's own target_accuracy instead, which the smoke profile therefore "
        "requires exactly once (before the first eval)",
    ),
    RelaxedRule(
        "max_steps == 1200000",
        "the smoke schedule is a few steps long; the key must still be logged exactly once",
    ),
)

# The smoke profile's end-of-log check that replaces the official decay-steps check.
SMOKE_DECAY_CHECK = (
    "s.get('opt_learning_rate_decay_steps') == s.get('max_steps', 0) - s.get('opt_learning_rate_warmup_steps', 0)"
)
# The smoke profile's target check; without a logged target_accuracy no eval can pass it.
SMOKE_TARGET_CHECK = "(v['value'] <= s.get('target_accuracy', 0.0)) and v['value'] > 0.0"


class RulesetError(Exception):
    """The requested ruleset or profile cannot be built from the installed mlperf-logging."""


def official_rules_dir(ruleset: str) -> Path:
    """Folder of the installed official rule files for `ruleset`."""
    if ruleset not in RULESETS:
        raise RulesetError(f"ruleset {ruleset!r} is not supported; choose one of {', '.join(RULESETS)}")
    folder = _CHECKER_DIR / f"{USAGE}_{ruleset}"
    if not (folder / f"closed_{BENCHMARK}.yaml").is_file():
        raise RulesetError(f"the installed mlperf-logging has no {BENCHMARK} rules for {ruleset} ({folder})")
    return folder


@cache
def official_target(ruleset: str) -> float | None:
    """The eval_accuracy target written in the official closed rules (3.3 for llama31_8b)."""
    records = _load_records(official_rules_dir(ruleset) / f"closed_{BENCHMARK}.yaml")
    check = _key_record(records, "eval_accuracy").get("ATLEAST_ONE_CHECK", "")
    match = re.search(r"v\['value'\]\s*<=\s*([0-9.]+)", check)
    return float(match.group(1)) if match else None


@contextmanager
def rule_files(ruleset: str, profile: str) -> Iterator[str]:
    """Yield the config path to hand to the official checker for this ruleset and profile.

    For ``closed`` this is the installed `training_<ruleset>/common.yaml`; for ``smoke`` it is the
    `common.yaml` of a patched copy that lives as long as the context.
    """
    official = official_rules_dir(ruleset)
    if profile == "closed":
        yield f"{official.name}/common.yaml"
        return
    if profile != "smoke":
        raise RulesetError(f"profile {profile!r} is not supported; choose one of {', '.join(PROFILES)}")
    with tempfile.TemporaryDirectory(prefix="llama31_8b_smoke_rules_") as tmp:
        yield str(build_smoke_rules(ruleset, Path(tmp)))


def build_smoke_rules(ruleset: str, dest: Path) -> Path:
    """Copy the official rule files into `dest`, relax the 8B-scale checks; return common.yaml."""
    official = official_rules_dir(ruleset)
    copy = dest.resolve() / official.name
    shutil.copytree(official, copy)
    prefix = copy.parent.as_posix()
    if "'" in prefix or "\\" in prefix:
        # The path goes into a Python string literal inside the rule files.
        raise RulesetError(f"cannot place the smoke rules under {prefix!r}: the path holds a quote")
    # The rule files enqueue each other by paths relative to the checker's package folder; an
    # absolute path wins in the checker's os.path.join, so point them at the copy.
    enqueue = re.compile(r"enqueue_config\('" + re.escape(official.name) + "/")
    redirected = 0
    for rule_file in sorted(copy.glob("*.yaml")):
        text = rule_file.read_text()
        text, count = enqueue.subn(f"enqueue_config('{prefix}/{official.name}/", text)
        redirected += count
        rule_file.write_text(text)
    if redirected == 0:
        raise RulesetError(f"{official}: found no enqueue_config calls to redirect; the layout changed")
    target = copy / f"closed_{BENCHMARK}.yaml"
    records = _relax_llama31_8b(_load_records(target), target)
    target.write_text(yaml.safe_dump(records, sort_keys=False, width=10_000))
    return copy / "common.yaml"


def _relax_llama31_8b(records: list[dict], source: Path) -> list[dict]:
    """Apply SMOKE_RELAXATIONS to the records of closed_llama31_8b.yaml."""

    def take(key: str, field_name: str, expected: str) -> dict:
        record = _key_record(records, key, source)
        found = record.get(field_name)
        if not isinstance(found, str) or found.strip() != expected:
            raise RulesetError(
                f"{source}: expected the official {key} {field_name} to be {expected!r}, found "
                f"{found!r}; the smoke profile must be reviewed for this mlperf-logging version"
            )
        del record[field_name]
        return record

    if any("END" in r for r in records) or any(r.get("KEY", {}).get("NAME") == "target_accuracy" for r in records):
        raise RulesetError(f"{source}: already has an END block or a target_accuracy rule; review the smoke profile")
    take("max_sequence_length", "CHECK", "v['value'] == 8192")
    take("eval_samples", "CHECK", "v['value'] == 1024")
    take("max_steps", "CHECK", "v['value'] == 1200000")["POST"] = "s['max_steps'] = v['value']"
    decay = take(
        "opt_learning_rate_decay_steps",
        "CHECK",
        "v['value'] == 1_200_000 - s['opt_learning_rate_warmup_steps']",
    )
    decay["POST"] = "s['opt_learning_rate_decay_steps'] = v['value']"
    take("eval_accuracy", "ATLEAST_ONE_CHECK", "(v['value'] <= 3.3) and v['value'] > 0.0")["ATLEAST_ONE_CHECK"] = (
        SMOKE_TARGET_CHECK
    )
    records.append(
        {
            "KEY": {
                "NAME": "target_accuracy",
                "REQ": "EXACTLY_ONE",
                "POST": "s['target_accuracy'] = v['value']",
            }
        }
    )
    records.append({"END": {"CHECK": SMOKE_DECAY_CHECK}})
    return records


def _load_records(path: Path) -> list[dict]:
    # BaseLoader, as the official checker loads its rules: every scalar stays a string.
    with open(path) as f:
        return yaml.load(f, Loader=yaml.BaseLoader) or []


def _key_record(records: list[dict], key: str, source: Path | None = None) -> dict:
    for record in records:
        if record.get("KEY", {}).get("NAME") == key:
            return record["KEY"]
    raise RulesetError(f"{source or 'rules'}: no rule for key {key!r}; the official rules changed")


@dataclass
class OfficialResult:
    """What the official compliance checker said about one log."""

    # (key or None, message) for every failure the checker keeps, in the checker's order.
    messages: list[tuple[str | None, str]] = field(default_factory=list)
    # (key, message) for the checker's warnings (not failures in the official tool).
    warnings: list[tuple[str, str]] = field(default_factory=list)
    parse_errors: int = 0
    # Set when the checker raised instead of reporting; the exception in one line.
    crashed: str | None = None
    # The checker's own logging output, captured so it does not land on the caller's console.
    log_output: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.crashed is None and not self.messages


def run_official_checker(parser_lines: list[str], ruleset: str, config: str) -> OfficialResult:
    """Run `mlp_compliance.ComplianceChecker` on lines prepared by `compliance.mllog_file`.

    This is the body of the checker's own `check_file`, minus its file reading (the lines come
    from `read_mllog`, so unreadable lines are stand-ins) and minus its final logging call (the
    messages are read from the checker object instead).
    """
    parser = importlib.import_module(f"mlperf_logging.compliance_checker.mlp_parser.ruleset_{ruleset.replace('.', '')}")
    checker = mlp_compliance.make_checker(USAGE, ruleset, quiet=False, werror=False)
    result = OfficialResult()
    # The checker keeps a module-level queue of rule files; a run that stopped half-way would
    # leave entries behind for the next log.
    mlp_compliance.enqueued_configs.clear()
    with captured_logging() as records:
        try:
            loglines, errors = parser.parse_generator(parser_lines)
            result.parse_errors = len(errors)
            if errors:
                checker.put_message("Log lines had parsing errors.")
            checker.check_loglines(loglines, config)
        except Exception as err:  # the checker evaluates rule code; any error must become a report
            result.crashed = f"{type(err).__name__}: {err}"
        finally:
            mlp_compliance.enqueued_configs.clear()
    result.log_output = [r.getMessage() for r in records]
    result.messages = [*checker.overwritable.items(), *((None, m) for m in checker.not_overwritable)]
    result.warnings = list(checker.warnings.items())
    return result


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured_logging() -> Iterator[list[logging.LogRecord]]:
    """Collect what the official tools log on the root logger instead of printing it.

    They log through the root logger (`logging.info(...)`); for the duration of the call the root
    handlers are swapped for a collector and restored afterwards.
    """
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    collector = _Collector()
    root.handlers = [collector]
    root.setLevel(logging.INFO)
    try:
        yield collector.records
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)
