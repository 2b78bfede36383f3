"""Every knob's range and choices: what validate() refuses, with the knob named, and what it still takes.

Most cases build the configuration in-process; two go through `python -m benchmark.train
--print-config` to see the exit status and that no traceback reaches the user.
Run: bash dev/test.sh tests/test_config_ranges.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import config as cfgmod
from benchmark.config import ConfigError, add_arguments, build_config, validate

REPO = Path(__file__).resolve().parents[1]

# String knobs that hold free text (paths, names) rather than one of a list of values.
FREE_TEXT = {
    "PREPROCESSED_PATH",
    "--valid-file",
    "TOKENIZER_PATH",
    "INDEX_CACHE_DIR",
    "SMOKE_DATA_DIR",
    "CHECKPOINT_DIR",
    "MODEL_CKPT",
    "RESULT_DIR",
    "SUBMISSION_ORG",
    "SUBMISSION_PLATFORM",
    "TENSORBOARD_DIR",
    "WANDB_PROJECT",
    "PROFILE_DIR",
    # not free, but parsed by validate() rather than listed: tests/test_watch.py refuses bad ones
    "PROFILE_STEPS",
    "PROFILE_RANKS",
}


def cfg_from(argv=(), env=None):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return build_config(parser.parse_args(list(argv)), env=env or {}, preset="smoke")


def all_fields():
    for _, f in cfgmod.knob_fields():
        yield f


def test_every_numeric_knob_has_a_range_and_every_other_string_knob_its_choices():
    numeric = [f for f in all_fields() if f.type in ("int", "float")]
    assert len(numeric) == 35  # EXIT_DURATION_MINS included
    assert [cfgmod.knob_name(f) for f in numeric if f.metadata["range"] is None] == []
    strings = {cfgmod.knob_name(f) for f in all_fields() if f.type == "str"}
    enumerated = {cfgmod.knob_name(f) for f in all_fields() if f.metadata["choices"] is not None}
    assert enumerated == strings - FREE_TEXT
    assert len(enumerated) == 14  # CKPT_FORMAT and PRECISION_AWARE_OPTIMIZER included


def _outside(bounds: cfgmod.Range) -> list[float]:
    """Values just past each bound of a range."""
    out = []
    if bounds.at_least is not None:
        out.append(bounds.at_least - 1)
    if bounds.above is not None:
        out.append(bounds.above)
    if bounds.at_most is not None:
        out.append(bounds.at_most + 1)
    if bounds.below is not None:
        out.append(bounds.below)
    return out


OUT_OF_RANGE = [
    (f, value)
    for f in all_fields()
    if f.type in ("int", "float")
    for value in _outside(f.metadata["range"]) + (["nan", "inf", "-inf"] if f.type == "float" else [])
]


@pytest.mark.parametrize(
    "f, value",
    OUT_OF_RANGE,
    ids=[f"{cfgmod.knob_name(f)}={v}" for f, v in OUT_OF_RANGE],
)
def test_a_value_past_any_bound_is_refused_by_name(f, value):
    """Through the knob's flag, one value past each bound of its range (and nan/inf for a float)."""
    text = str(value)
    with pytest.raises(ConfigError) as err:
        cfg_from([f"{cfgmod._flag_name(f)}={text}"])  # the = form, since argparse takes -inf for a flag
    message = str(err.value)
    name = cfgmod.knob_name(f)
    assert message.startswith(f"{name}="), message
    assert "must be" in message, message
    if text in ("nan", "inf", "-inf"):
        assert message.startswith(f"{name}={text} is not a finite number"), message


@pytest.mark.parametrize(
    "env, message",
    [
        ({"LR": "nan"}, "LR=nan is not a finite number: it must be 0 or more (0 takes the RCP learning rate"),
        ({"LR": "inf"}, "LR=inf is not a finite number: it must be 0 or more"),
        ({"LR": "-1e-3"}, "LR=-0.001 must be 0 or more"),
        ({"TARGET": "nan"}, "TARGET=nan is not a finite number: it must be greater than 0 (it is a log-perplexity"),
        ({"TARGET": "-3.3"}, "TARGET=-3.3 must be greater than 0"),
        ({"SEED": "-1"}, "SEED=-1 must be between 0 and 4294967295 (NumPy seeds are below 2**32)"),
        ({"SEED": "4294967296"}, "SEED=4294967296 must be between 0 and 4294967295"),
        (
            {"SEED": "4294967295", "PP": "2"},
            "SEED=4294967295 with PP=2 seeds the last pipeline stage with 4294967395 (SEED + 100 x (PP - 1)), "
            "above NumPy's limit of 4294967295: choose a SEED of at most 4294967195",
        ),
        ({"LOG_EVERY": "0"}, "LOG_EVERY=0 must be 1 or more"),
        ({"GBS": "1e999"}, "GBS='1e999' is not a valid int: give a whole number such as 16 or 1e3"),
        ({"GBS": "1.5"}, "GBS='1.5' is not a valid int"),
        ({"GBS": "abc"}, "GBS='abc' is not a valid int"),
        ({"GBS": "nan"}, "GBS='nan' is not a valid int"),
        ({"GBS": "0"}, "GBS=0 must be 1 or more"),
        ({"GBS": "-16"}, "GBS=-16 must be 1 or more"),
        ({"MAX_STEPS": str(2**64)}, f"MAX_STEPS={2**64} is too large: it must be at most {2**63 - 1} (int64)"),
        ({"LR": "fast"}, "LR='fast' is not a valid float: give a number such as 3.3 or 4e-4"),
        ({"SUBMISSION_STATUS": "bogus"}, "SUBMISSION_STATUS='bogus' must be one of onprem, cloud, preview, research"),
        ({"SUBMISSION_DIVISION": "closed-ish"}, "SUBMISSION_DIVISION='closed-ish' must be one of closed, open"),
        (
            {"EVAL_EVERY": "65536"},
            "EVAL_EVERY=65536 is larger than MAX_TRAIN_SAMPLES=32768: the run would stop before its first "
            "evaluation; lower EVAL_EVERY or raise MAX_TRAIN_SAMPLES",
        ),
        ({"DEVICE": "gpu"}, "DEVICE='gpu' must be one of auto, cuda, cpu"),
        ({"PRECISION": "fp16"}, "PRECISION='fp16' must be one of auto, bf16, fp32"),
        ({"FUSIONS": "maybe"}, "FUSIONS='maybe' must be one of auto, on, off"),
        ({"BENCHMARK_AREA": "en5"}, "BENCHMARK_AREA='en5' must be one of en6, en6+en7"),
        ({"WARMUP_SAMPLES": "-2"}, "WARMUP_SAMPLES=-2 must be -1 or more (-1 takes the RCP warmup of the GBS)"),
        ({"MAX_TRAIN_SAMPLES": "-1"}, "MAX_TRAIN_SAMPLES=-1 must be 0 or more (0 takes twice the RCP mean"),
        ({"JOB_SAMPLES": "-1024"}, "JOB_SAMPLES=-1024 must be 0 or more (0 never pauses)"),
        ({"VOCAB_SIZE": "-1"}, "VOCAB_SIZE=-1 must be 0 or more (0 takes the tokenizer's size)"),
        ({"RECOMPUTE": "1", "RECOMPUTE_LAYERS": "-1"}, "RECOMPUTE_LAYERS=-1 must be 0 or more"),
        ({"FP8": "maybe"}, "FP8='maybe' is not a valid bool: give 1 or 0"),
    ],
)
def test_bad_values_are_named_with_the_fix(env, message):
    with pytest.raises(ConfigError) as err:
        cfg_from(env=env)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--adam-beta2", "1"], "--adam-beta2=1.0 must be 0 or more and less than 1"),
        (["--clip-grad", "0"], "--clip-grad=0.0 must be greater than 0 (the benchmark clips at 1.0)"),
        (["--rotary-base", "1"], "--rotary-base=1 must be greater than 1"),
        (["--rope-scaling-factor", "0.5"], "--rope-scaling-factor=0.5 must be 1 or more (1 = no scaling)"),
        (["--min-lr-ratio", "1.5"], "--min-lr-ratio=1.5 must be between 0 and 1"),
        (["--init-std", "nan"], "--init-std=nan is not a finite number: it must be greater than 0"),
    ],
)
def test_knobs_without_an_environment_variable_are_named_by_their_flag(argv, message):
    with pytest.raises(ConfigError) as err:
        cfg_from(argv)
    assert message in str(err.value)


def test_the_range_is_checked_before_the_rcp_defaults():
    """A negative GBS is named as such, not as a batch size without a reference convergence point."""
    with pytest.raises(ConfigError) as err:
        build_config(env={"GBS": "-5"}, preset="llama31_8b")
    assert str(err.value) == "GBS=-5 must be 1 or more"


@pytest.mark.parametrize(
    "env, section, name, value",
    [
        ({"GBS": "1.6e1"}, "train", "global_batch_size", 16),
        ({"GBS": " 32 "}, "train", "global_batch_size", 32),
        ({"SEED": "0"}, "train", "seed", 0),
        ({"SEED": "4294967295"}, "train", "seed", 4294967295),
        ({"SEED": "4294967195", "PP": "2", "WORLD_SIZE": "2", "DEVICE": "cuda"}, "train", "seed", 4294967195),
        ({"LR": "1e6"}, "train", "lr", 1e6),
        ({"EVAL_EVERY": "32768"}, "train", "eval_every", 32768),
        ({"SUBMISSION_STATUS": "cloud"}, "log", "submission_status", "cloud"),
        ({"SUBMISSION_STATUS": "preview"}, "log", "submission_status", "preview"),
        ({"SUBMISSION_STATUS": "research"}, "log", "submission_status", "research"),
        ({"SUBMISSION_DIVISION": "open"}, "log", "submission_division", "open"),
    ],
)
def test_values_at_the_edges_are_accepted(env, section, name, value, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", env.pop("WORLD_SIZE", "1"))
    cfg = cfg_from(env=env)
    assert getattr(getattr(cfg, section), name) == value


def test_validate_checks_values_set_in_code():
    """validate() holds the same checks for a configuration changed after build_config()."""
    cfg = cfg_from()
    cfg.train.lr = float("nan")
    with pytest.raises(ConfigError, match="LR=nan is not a finite number"):
        validate(cfg, world_size=1)
    cfg = cfg_from()
    cfg.log.log_every = 1.5
    with pytest.raises(ConfigError, match=r"LOG_EVERY=1.5 must be a whole number"):
        validate(cfg, world_size=1)
    cfg = cfg_from()
    cfg.parallel.fp8 = "yes"
    with pytest.raises(ConfigError, match=r"FP8='yes' must be true or false"):
        validate(cfg, world_size=1)


@pytest.mark.parametrize("world_size", ["abc", "0", "-2"])
def test_world_size_from_the_launcher_is_checked(world_size, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", world_size)
    with pytest.raises(ConfigError, match=rf"WORLD_SIZE='{world_size}' must be a whole number, 1 or more"):
        cfg_from()


@pytest.mark.parametrize(
    "env, message",
    [
        ({"LR": "nan"}, "error: LR=nan is not a finite number"),
        ({"GBS": "1e999"}, "error: GBS='1e999' is not a valid int"),
    ],
)
def test_the_entry_point_exits_2_without_a_traceback(env, message):
    base = {k: v for k, v in os.environ.items() if k not in ("LR", "GBS", "PRESET", "WORLD_SIZE")}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark.train", "--print-config"],
        cwd=REPO,
        env={**base, "PRESET": "smoke", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_help_states_each_range():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = " ".join(parser.format_help().split())
    for part in (
        "between 0 and 4294967295 (env SEED)",
        "print training metrics every this many steps; 1 or more (env LOG_EVERY)",
        "AdamW beta2; 0 or more and less than 1",
        "0 = the RCP value for the GBS; 0 or more (env LR)",
    ):
        assert part in text
