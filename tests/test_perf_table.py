"""benchmark.perf_table: the JSON lines of one device call become the comparison table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.perf_table import read_records, table, variant

REPO = Path(__file__).resolve().parents[1]
SHAPE = {"device": "NVIDIA H200", "gpus": 1, "layers": 8, "seq": 8192, "mbs": 1}


def _record(bench, tokens, **extra):
    return {
        "bench": bench,
        "label": "",
        "tokens_per_sec_per_gpu": tokens,
        "mfu": tokens / 65_000,
        "peak_mem_gib": 50.0,
        "compile": False,
        **SHAPE,
        **extra,
    }


def _lines():
    eager_peer = _record("benchmark.peers.hf_llama", 30_000.0, spec="transformers LlamaForCausalLM, SDPA attention")
    peer = _record(
        "benchmark.peers.hf_llama",
        35_000.0,
        compile=True,
        spec="transformers LlamaForCausalLM, SDPA attention, layers compiled",
        precision="bf16",
    )
    te = _record(
        "benchmark.perf",
        32_104.0,
        spec="TE spec",
        precision="bf16 mixed",
        experiment={"use_precision_aware_optimizer": "True", "fused_single_qkv_rope": "True"},
    )
    fp8 = _record("benchmark.perf", 42_980.0, label="FP8 delayed + FP8 attention")
    other = _record("benchmark.perf", 45_000.0, label="MBS 2", mbs=2, peak_mem_gib=None, mfu=None)
    return [
        "[setup] a log line",
        json.dumps(eager_peer),
        "{not json",
        json.dumps(peer),
        json.dumps({"bench": "x"}),
        json.dumps(te),
        "warning: something",
        json.dumps(fp8),
        json.dumps(other),
    ]


def test_records_are_picked_from_the_output_and_compared_within_their_group():
    records = read_records(_lines())
    assert [r["tokens_per_sec_per_gpu"] for r in records] == [30_000.0, 35_000.0, 32_104.0, 42_980.0, 45_000.0]
    assert variant(records[2]) == "TE spec, bf16 mixed, use_precision_aware_optimizer=True, fused_single_qkv_rope=True"
    assert variant({**records[2], "experiment": {}, "precision_aware_optimizer": "on"}) == (
        "TE spec, bf16 mixed, precision-aware optimizer"
    )
    assert variant({**records[2], "experiment": {}, "precision_aware_optimizer": "off"}) == "TE spec, bf16 mixed"
    text = table(records).splitlines()
    first = text.index(
        "1x NVIDIA H200, 8 layers, seq 8192, MBS 1; ratios against transformers LlamaForCausalLM, SDPA attention, "
        "layers compiled, bf16 (35,000 tokens/s per GPU):"
    )
    rows = text[first + 4 : first + 8]
    # The compiled peer is the reference of its group, not the eager one measured before it.
    assert rows[0].endswith("| 30,000 (0.462) | 50.0 | 0.86 |")
    assert rows[1].endswith("| 35,000 (0.538) | 50.0 | 1.00 |")
    assert (
        rows[2] == "| TE spec, bf16 mixed, use_precision_aware_optimizer=True, fused_single_qkv_rope=True "
        "| 32,104 (0.494) | 50.0 | 0.92 |"
    )
    assert rows[3] == "| FP8 delayed + FP8 attention | 42,980 (0.661) | 50.0 | 1.23 |"
    # Another micro-batch size is another group; without a peer of its own it has no ratio.
    assert "1x NVIDIA H200, 8 layers, seq 8192, MBS 2:" in text
    assert "| MBS 2 | 45,000 | - | - |" in text


def test_the_command_reads_files_and_says_when_there_is_nothing_to_tabulate(tmp_path):
    out = tmp_path / "call.txt"
    out.write_text("\n".join(_lines()) + "\n")
    p = subprocess.run(
        [sys.executable, "-m", "benchmark.perf_table", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert "| FP8 delayed + FP8 attention | 42,980 (0.661) | 50.0 | 1.23 |" in p.stdout
    empty = tmp_path / "empty.txt"
    empty.write_text("no records here\n")
    p = subprocess.run(
        [sys.executable, "-m", "benchmark.perf_table", str(empty), str(tmp_path / "missing.txt")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.startswith(f"error: {tmp_path / 'missing.txt'}: cannot be read (")
    p = subprocess.run(
        [sys.executable, "-m", "benchmark.perf_table", str(empty)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "no JSON line of benchmark.perf or of a peer" in p.stderr


def test_the_one_gpu_comparison_needs_a_gpu_and_says_so(tmp_path):
    script = REPO / "dev" / "perf_one_gpu.sh"
    p = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("The one-GPU throughput comparison of docs/PERFORMANCE.md")
    p = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "bash dev/perf_one_gpu.sh OUT_DIR" in p.stdout
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the refusal without one cannot be shown (the comparison itself is a benchmark)")
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}
    p = subprocess.run(
        ["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True, timeout=120, env=env
    )
    assert p.returncode == 2 and p.stderr == (
        f"error: {sys.executable} sees no CUDA GPU: this comparison times one GPU (set PYTHON to an "
        "interpreter whose torch has CUDA, or run it on a GPU machine)\n"
    )
    assert not (tmp_path / "out").exists()
