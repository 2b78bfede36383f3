"""Tests for `python -m compliance.estimate`: projection from the RCP file, inputs, bad input.

Run: .venv/bin/python -m pytest tests/test_compliance_estimate.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from compliance.estimate import EstimateError, convergence, estimate, main, read_perf
from tests.test_compliance_check import REPO

# SPEC's table: GBS 16 converges in 161,587 samples on average (159,744 to 172,032).
GBS16_MEAN, GBS16_LOW, GBS16_HIGH = 161_587.2, 159_744, 172_032


def test_gbs16_projection_from_the_rcp_file():
    result = estimate(14_451, 8, 16)
    c = result.convergence
    assert (c.mean, c.low, c.high, c.runs) == (pytest.approx(GBS16_MEAN), GBS16_LOW, GBS16_HIGH, 20)
    assert c.interpolated_between is None
    samples_per_sec = 14_451 * 8 / 8192
    assert result.samples_per_sec == pytest.approx(samples_per_sec)
    assert result.minutes(c.mean) == pytest.approx(GBS16_MEAN / samples_per_sec / 60)
    assert result.evals == 14  # ceil(161,587.2 / 12,288)
    text = result.format()
    assert "190.8 min = 3.18 h (range 188.7 to 203.2 min), training steps only" in text
    assert "161,587 (mean of 20 reference runs); range 159,744 to 172,032" in text
    assert "steps at GBS 16:     10,099 (range 9,984 to 10,752)" in text
    assert "not counted:" in text and "evaluation, which runs inside the timed region: about 14 evals" in text


@pytest.mark.parametrize(
    ("gbs", "mean", "low", "high"),
    [(32, 179_404.8, 172_032, 196_608), (64, 226_713.6, 208_896, 245_760), (128, 345_907.2, 307_200, 405_504)],
)
def test_spec_table_matches_the_rcp_file(gbs, mean, low, high):
    c = convergence(gbs)
    assert (c.mean, c.low, c.high) == (pytest.approx(mean), low, high)


def test_batch_size_between_rcps_is_interpolated_and_said():
    c = convergence(48)
    assert c.interpolated_between == (32, 64)
    assert c.mean == pytest.approx((179_404.8 + 226_713.6) / 2)
    assert "interpolated linearly between GBS 32 and 64" in estimate(10_000, 8, 48).format()


def test_from_perf_reads_the_last_measurement_and_flags_override(tmp_path, capsys):
    perf = tmp_path / "perf.jsonl"
    lines = [
        {"tokens_per_sec_per_gpu": 1.0, "gpus": 1, "gbs": 16},
        {"note": "no measurement on this line"},
        {"tokens_per_sec_per_gpu": 6_504, "world_size": 2, "global_batch_size": 32},
    ]
    perf.write_text("\n".join(json.dumps(r) for r in lines) + "\nnot json at the end\n")
    assert read_perf(perf) == {"tokens_per_sec_per_gpu": 6_504, "gpus": 2, "gbs": 32}
    assert main(["--from-perf", str(perf), "--gpus", "16"]) == 0
    out = capsys.readouterr().out
    assert "6,504 tokens/s/GPU x 16 GPUs" in out and "(GBS 32, 16 GPUs)" in out


def test_from_perf_reads_a_benchmark_perf_record(tmp_path, capsys):
    record = {
        "bench": "benchmark.perf",
        "device": "NVIDIA H100 80GB HBM3",
        "gpus": 8,
        "layers": 8,
        "seq": 8192,
        "gbs": 16,
        "tokens_per_sec_per_gpu": 14_451.0,
    }
    perf = tmp_path / "perf.jsonl"
    perf.write_text(json.dumps(record) + "\n")
    assert main(["--from-perf", str(perf)]) == 0
    out = capsys.readouterr().out
    assert "190.8 min" in out
    assert "measured on: NVIDIA H100 80GB HBM3" in out
    assert "warning: the measurement ran 8 layers, the 8B has 32" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tokens-per-sec-per-gpu", "1000", "--gpus", "8", "--gbs", "256"], "no RCP covers global batch size 256"),
        (["--tokens-per-sec-per-gpu", "1000", "--gpus", "8", "--gbs", "8"], "no RCP covers global batch size 8"),
        (["--tokens-per-sec-per-gpu", "0", "--gpus", "8", "--gbs", "16"], "must be positive"),
        (["--tokens-per-sec-per-gpu", "10", "--gpus", "0", "--gbs", "16"], "gpus must be a positive integer"),
    ],
)
def test_bad_values_exit_2_with_a_message(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err


def test_bad_perf_files(tmp_path, capsys):
    with pytest.raises(EstimateError, match="no JSON line with tokens_per_sec_per_gpu"):
        _write_and_read(tmp_path, '{"gpus": 8}\n')
    with pytest.raises(EstimateError, match="line 1: 'gpus' is not a number"):
        _write_and_read(tmp_path, '{"tokens_per_sec_per_gpu": 5, "gpus": "eight"}\n')
    assert main(["--from-perf", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--gpus", "8"])
    assert exit_info.value.code == 2
    assert "missing --tokens-per-sec-per-gpu, --gbs" in capsys.readouterr().err


def _write_and_read(tmp_path, text):
    path = tmp_path / "perf.jsonl"
    path.write_text(text)
    return read_perf(path)


def test_module_entry_point_help():
    done = subprocess.run(
        [sys.executable, "-m", "compliance.estimate", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    )
    text = " ".join(done.stdout.split())
    assert "--tokens-per-sec-per-gpu X" in text and "--from-perf FILE" in text
    assert "Evaluation overhead is not in the projection" in text
