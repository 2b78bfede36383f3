"""benchmark.perf on the CPU: every flag explained, a tiny shape timed, a large one refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]
TINY = ["--layers", "2", "--hidden", "64", "--ffn", "192", "--heads", "4", "--kv-heads", "2", "--vocab", "256"]


def _perf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmark.perf", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_every_flag_has_a_help_text():
    from benchmark.perf import parser

    options = [a for a in parser()._actions if a.option_strings and a.dest != "help"]
    assert len(options) > 25
    assert [a.option_strings[0] for a in options if not (a.help or "").strip()] == []


def test_parameter_count_is_the_models():
    from benchmark.config import build_config
    from benchmark.flops import parameter_count
    from benchmark.model import build_model
    from benchmark.train import distributed

    assert parameter_count(ModelConfig(), 128256) == 8_030_261_248  # Llama 3.1 8B
    shape = {"NUM_LAYERS": "2", "HIDDEN_SIZE": "64", "FFN_HIDDEN_SIZE": "192", "NUM_HEADS": "4", "NUM_KV_GROUPS": "2"}
    cfg = build_config(env={"PRESET": "smoke", "DEVICE": "cpu", **shape})
    with distributed(cfg):
        model, _ = build_model(cfg, 256, bf16=False, use_cpu_initialization=True)
        built = sum(p.numel() for p in model.parameters())
    assert parameter_count(cfg.model, 256) == built


@pytest.mark.slow
def test_a_tiny_shape_is_timed_on_cpu_and_says_what_it_does():
    p = _perf(*TINY, "--seq", "64", "--warmup", "1", "--steps", "2", "--label", "tiny")
    assert p.returncode == 0, p.stderr
    (line,) = [x for x in p.stdout.splitlines() if x.startswith("{")]
    record = json.loads(line)
    assert (record["device"], record["layers"], record["hidden"], record["vocab"], record["label"]) == (
        "cpu",
        2,
        64,
        256,
        "tiny",
    )
    assert record["tokens_per_sec_per_gpu"] > 0 and record["step_time_s"] > 0
    assert record["precision_aware_optimizer"] == "off"  # the CPU engine's torch AdamW
    assert "parameters on 1 x cpu; 1 warm-up and 2 timed steps of 1 x 64 tokens" in p.stderr
    assert "[perf] step 3/3 (timed): " in p.stderr


def test_the_full_shape_is_refused_on_cpu():
    p = _perf("--layers", "8")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert (
        "error: this shape has 2.80 B parameters and this run is on CPU, where a step would take minutes: shrink it "
        "(for example --layers 2 --hidden 64 --ffn 192 --heads 4 --kv-heads 2 --vocab 256 --seq 64), or run on a GPU"
    ) in p.stderr


def test_the_precision_aware_optimizer_is_refused_on_cpu_naming_the_knob():
    p = _perf(*TINY, "--seq", "64", "--precision-aware-optimizer", "on")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "error: PRECISION_AWARE_OPTIMIZER=on needs the TransformerEngine layer spec" in p.stderr


def test_fp8_attention_is_refused_without_fp8_naming_both_knobs():
    p = _perf(*TINY, "--seq", "64", "--fp8-attention")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "error: FP8_ATTENTION=1 needs FP8=1" in p.stderr


def _fp8_vs_bf16():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fp8_vs_bf16", REPO / "dev" / "fp8_vs_bf16.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fp8_vs_bf16_variants_are_parsed_and_bad_ones_refused(capsys):
    script = _fp8_vs_bf16()
    text = "attn:FP8_RECIPE=delayed,FP8_AMAX_HISTORY=1024,FP8_AMAX_ALGO=max,FP8_ATTENTION=1"
    assert script.parse_variant(text) == (
        "attn",
        {"FP8_RECIPE": "delayed", "FP8_AMAX_HISTORY": "1024", "FP8_AMAX_ALGO": "max", "FP8_ATTENTION": "1"},
    )
    a = script.parser().parse_args(["--data", "d", "--tokenizer", "t", "--variant", text, "--variant", "t:FP8=1"])
    assert [name for name, _ in a.variant] == ["attn", "t"]
    assert script.parser().parse_args(["--data", "d", "--tokenizer", "t"]).variant == []
    for bad, message in [
        ("attn", "write NAME:KEY=VALUE"),
        ("attn:", "write NAME:KEY=VALUE"),
        (":FP8_ATTENTION=1", "write NAME:KEY=VALUE"),
        ("a b:FP8_ATTENTION=1", "write NAME:KEY=VALUE"),
        ("attn:FP8_ATTENTION", "write NAME:KEY=VALUE"),
        ("attn:FP8_ATTENTION=", "write NAME:KEY=VALUE"),
        ("attn:FP8_ATTENTON=1", "'FP8_ATTENTON' is not a knob of the training configuration"),
        ("attn:FP8_ATTENTION=1,FP8_ATTENTION=0", "FP8_ATTENTION is given twice"),
    ]:
        with pytest.raises(SystemExit) as err:
            script.parser().parse_args(["--data", "d", "--tokenizer", "t", "--variant", bad])
        assert err.value.code == 2
        stderr = capsys.readouterr().err
        assert f"argument --variant: {bad!r}: " in stderr and message in stderr, bad
        with pytest.raises(script.argparse.ArgumentTypeError, match=message):
            script.parse_variant(bad)
