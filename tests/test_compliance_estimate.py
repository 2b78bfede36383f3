"""Tests for compliance.rcp and `python -m compliance.estimate`: the RCP checker's numbers, inputs, bad input.

Run: .venv/bin/python -m pytest tests/test_compliance_estimate.py -q
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from benchmark.config import ConfigError, build_config, check_layout
from compliance.estimate import EstimateError, convergence, estimate, main, read_perf
from compliance.rcp import checker, reference_point
from tests.helpers import raw_rcps
from tests.test_compliance_check import REPO

RAW = raw_rcps()


def test_gbs16_olympic_mean_is_the_library_s():
    # 17 of the 20 reference runs at GBS 16 stop at 159,744 samples, 3 at 172,032; the olympic mean
    # drops one of each: (16 x 159,744 + 2 x 172,032) / 18 = 161,109.33.
    assert RAW[16]["olympic"] == pytest.approx((16 * 159_744 + 2 * 172_032) / 18)
    point = reference_point(16)
    assert point.mean == pytest.approx(RAW[16]["olympic"]) and point.mean == pytest.approx(161_109.33, abs=0.01)
    assert (point.lr, point.warmup_samples, point.interpolated_between) == (4e-4, 256, None)
    assert sorted(point.runs) == RAW[16]["runs"]
    # the check accepts a mean somewhat under the RCP mean (its t-test), never over it
    assert 0.95 * point.mean < point.min_mean < point.mean


def test_gbs16_projection_from_the_rcp_checker():
    result = estimate(14_451, 8, 16)
    c = result.convergence
    mean = RAW[16]["olympic"]
    assert (c.mean, c.low, c.high, c.runs) == (pytest.approx(mean), 159_744, 172_032, 20)
    assert c.interpolated_between is None
    samples_per_sec = 14_451 * 8 / 8192
    assert result.samples_per_sec == pytest.approx(samples_per_sec)
    assert result.minutes(c.mean) == pytest.approx(mean / samples_per_sec / 60)
    assert result.evals == 14  # ceil(161,109.3 / 12,288)
    text = result.format()
    assert "190.3 min = 3.17 h (runs 188.7 to 203.2 min), training steps only" in text
    assert "161,109 (olympic mean of 20 reference runs); runs 159,744 to 172,032" in text
    assert "steps at GBS 16:     10,069 (runs 9,984 to 10,752)" in text
    assert f"a mean of {c.min_mean:,.0f} samples passes the RCP check" in text
    assert "not counted:" in text and "evaluation, which runs inside the timed region: about 14 evals" in text


@pytest.mark.parametrize("gbs", [32, 64, 96, 128])
def test_every_rcp_is_its_olympic_mean(gbs):
    c = convergence(gbs)
    assert (c.mean, c.low, c.high) == (pytest.approx(RAW[gbs]["olympic"]), RAW[gbs]["runs"][0], RAW[gbs]["runs"][-1])
    point = reference_point(gbs)
    assert (point.lr, point.warmup_samples) == (RAW[gbs]["lr"], RAW[gbs]["warmup"])


def test_batch_size_between_rcps_is_the_checker_s_interpolation():
    # The RCP means grow with the batch size faster than linearly here, so the pruning keeps all five
    # and GBS 48 sits halfway between the olympic means of GBS 32 and 64.
    c = convergence(48)
    assert c.interpolated_between == (32, 64)
    assert c.mean == pytest.approx((RAW[32]["olympic"] + RAW[64]["olympic"]) / 2)
    assert (c.low, c.high, c.runs) == (None, None, 0)
    point = reference_point(48)
    assert (point.lr, point.warmup_samples) == (None, None)  # interpolated points carry no hyperparameters
    text = estimate(10_000, 8, 48).format()
    assert "the RCP checker's interpolation between GBS 32 and 64" in text and "(runs " not in text


def test_a_pruned_rcp_is_replaced_by_the_interpolation(monkeypatch):
    # Make GBS 64 converge slower than the line from GBS 32 to 96: the checker prunes it, and a GBS 64
    # run is then held against the interpolation (its own hyperparameters stay the recorded ones).
    rcp = checker()
    record = next(r for r in rcp.rcp_data.values() if r["BS"] == 64)
    pruned = {k: v for k, v in rcp.pruned_rcp_data.items() if v["BS"] != 64}
    monkeypatch.setattr(rcp, "pruned_rcp_data", pruned)
    point = reference_point(64)
    assert point.interpolated_between == (32, 96)
    assert point.mean == pytest.approx(RAW[32]["olympic"] + (RAW[96]["olympic"] - RAW[32]["olympic"]) / 2)
    assert (point.lr, point.warmup_samples) == (record["Hyperparams"]["opt_base_learning_rate"], 6144)


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
    assert "190.3 min" in out
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


def test_a_layout_the_trainer_refuses_exits_2_with_its_message_and_what_works(capsys):
    # GBS 16 on 32 GPUs at TP 1 is 32 data-parallel replicas for 16 sequences: the trainer refuses it.
    assert main(["--tokens-per-sec-per-gpu", "14451", "--gpus", "32", "--gbs", "16"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    with pytest.raises(ConfigError) as refused:
        check_layout(32, 16)
    trainer = str(refused.value)
    assert "GBS=16 is not divisible by MBS x data-parallel size = 1 x 32" in trainer
    assert f"the trainer refuses this layout: {trainer}" in captured.err
    assert "GBS 16 at TP 1 allows at most 16 GPUs; use TP 2, 4 or 8 for 32 GPUs" in captured.err
    # the layouts it names are taken
    for tp in ("2", "4", "8"):
        assert main(["--tokens-per-sec-per-gpu", "14451", "--gpus", "32", "--gbs", "16", "--tp", tp]) == 0
    assert "(GBS 16, 32 GPUs)" in capsys.readouterr().out
    assert main(["--tokens-per-sec-per-gpu", "14451", "--gpus", "16", "--gbs", "16"]) == 0


def test_the_layout_check_is_the_trainer_s_validation(monkeypatch):
    # The same message as the trainer's own configuration step gives a GPU job of 32 processes.
    monkeypatch.setenv("WORLD_SIZE", "32")
    with pytest.raises(ConfigError) as trainer:
        build_config(env={"GBS": "16", "TP": "1"}, preset="llama31_8b", job_device="cuda", need_paths=False)
    with pytest.raises(ConfigError) as layout:
        check_layout(32, 16)
    assert str(layout.value) == str(trainer.value)
    # A GBS between two RCPs has no learning rate of its own, but that is not a layout question.
    check_layout(8, 48)


@pytest.mark.parametrize(
    ("flags", "trainer", "advice"),
    [
        (
            ["--gpus", "8", "--gbs", "16", "--tp", "3"],
            "NUM_KV_GROUPS=8 is not divisible by TP=3",
            "GBS 16 at TP 3 is refused at any GPU count; use TP 1, 2, 4 or 8 for 8 GPUs",
        ),
        (
            ["--gpus", "12", "--gbs", "16", "--tp", "8"],
            "12 processes cannot be split into TP x PP x CP = 8",
            "GBS 16 at TP 8 allows at most 128 GPUs; no TP splits GBS 16 over 12 GPUs",
        ),
        (
            ["--gpus", "16", "--gbs", "16", "--mbs", "2"],
            "GBS=16 is not divisible by MBS x data-parallel size = 2 x 16",
            "GBS 16 with MBS 2 at TP 1 allows at most 8 GPUs; use TP 2, 4 or 8 for 16 GPUs",
        ),
        (
            ["--gpus", "64", "--gbs", "32", "--pp", "3"],
            "NUM_LAYERS=32 is not divisible by PP=3",
            "GBS 32 at TP 1, PP 3 is refused at any GPU count; no TP splits GBS 32, PP 3 over 64 GPUs",
        ),
        (
            ["--gpus", "64", "--gbs", "16", "--cp", "2"],
            "GBS=16 is not divisible by MBS x data-parallel size = 1 x 32",
            "GBS 16 at TP 1, CP 2 allows at most 32 GPUs; use TP 2, 4 or 8 for 64 GPUs",
        ),
    ],
)
def test_every_refused_layout_names_the_rule_and_the_way_out(flags, trainer, advice, capsys):
    assert main(["--tokens-per-sec-per-gpu", "10000", *flags]) == 2
    err = capsys.readouterr().err
    assert trainer in err and advice in err and "Traceback" not in err


def test_from_perf_checks_the_measured_layout(tmp_path, capsys):
    perf = tmp_path / "perf.jsonl"
    perf.write_text(json.dumps({"tokens_per_sec_per_gpu": 9_000, "gpus": 32, "gbs": 16, "tp": 2, "mbs": 1}) + "\n")
    assert read_perf(perf) == {"tokens_per_sec_per_gpu": 9_000, "gpus": 32, "gbs": 16, "tp": 2, "mbs": 1}
    assert main(["--from-perf", str(perf)]) == 0
    assert "(GBS 16, 32 GPUs)" in capsys.readouterr().out
    # a flag overrides the file's TP, and the overridden layout is checked
    assert main(["--from-perf", str(perf), "--tp", "1"]) == 2
    assert "GBS 16 at TP 1 allows at most 16 GPUs" in capsys.readouterr().err
    with pytest.raises(EstimateError, match="tp must be a positive integer"):
        estimate(9_000, 32, 16, tp=0)


def test_cluster_doc_s_table_holds_the_trainer_s_largest_gpu_counts():
    # docs/CLUSTER.md, "Batch size, parallelism and node count": the most GPUs per GBS and TP at MBS 1.
    doc = (REPO / "docs" / "CLUSTER.md").read_text()
    section = doc.split("## Batch size, parallelism and node count\n", 1)[1].split("\n## ", 1)[0]
    cell = r" (\d+) \((\d+) nodes\) \|"
    rows = re.findall(rf"^\| (\d+) \|{cell}{cell}{cell}$", section, flags=re.M)
    assert [int(row[0]) for row in rows] == [16, 32, 64]
    for gbs, *cells in rows:
        for tp, gpus, nodes in zip((1, 2, 4), map(int, cells[0::2]), map(int, cells[1::2]), strict=True):
            assert nodes * 8 == gpus
            check_layout(gpus, int(gbs), 1, tp)
            for more in range(gpus + 1, 2 * gpus + 1):
                with pytest.raises(ConfigError):
                    check_layout(more, int(gbs), 1, tp)


def test_the_cli_refuses_a_layout_without_a_traceback():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "compliance.estimate",
            "--tokens-per-sec-per-gpu",
            "14451",
            "--gpus",
            "32",
            "--gbs",
            "16",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert "use TP 2, 4 or 8 for 32 GPUs" in done.stderr


def test_module_entry_point_help():
    done = subprocess.run(
        [sys.executable, "-m", "compliance.estimate", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    )
    text = " ".join(done.stdout.split())
    assert "--tokens-per-sec-per-gpu X" in text and "--from-perf FILE" in text
    assert "--tp N" in text and "--pp N" in text and "--cp N" in text and "--mbs N" in text
    assert "Evaluation overhead is not in the projection" in text
