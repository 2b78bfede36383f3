"""Two nodes without Slurm: two torchrun agents (--nnodes 2) meeting through a c10d rendezvous.

Both agents run on this machine, on 127.0.0.1, one CPU process each, as docs/CLUSTER.md ("Several
nodes without Slurm") has them run on two nodes: the embedded default (smoke preset), shrunk as
tests/test_slurm.py shrinks it. Checked: both agents succeed, the two processes form one world of 2
on node ranks 0 and 1 (rank 0 prints the rendezvous), one MLPerf log with one seed is written, and
the run reaches its target and passes the smoke compliance check.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from tests.helpers import mllog_events

REPO = Path(__file__).resolve().parents[1]
KNOBS_RE = re.compile(r"^export ([A-Z][A-Z0-9_]*)=", re.M)
# The shrunk embedded default of tests/test_slurm.py: an evaluation every 4 steps on 16 sequences,
# a target the smoke model passes at its first evaluation (eval loss about 6.88 after 64 samples).
SHRUNK = {
    "PRESET": "smoke",
    "EVAL_EVERY": "64",
    "EVAL_SAMPLES": "16",
    "TARGET": "7.3",
    "WARMUP_SAMPLES": "32",
    "MAX_TRAIN_SAMPLES": "256",
    "LOG_EVERY": "2",
    "DEVICE": "cpu",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**knobs: str) -> dict[str, str]:
    """This environment without any knob of config.sh or torch.distributed variable, plus knobs."""
    names = set(KNOBS_RE.findall((REPO / "config.sh").read_text()))
    names |= {"SEED", "RESULT_DIR", "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(PYTHONWARNINGS="ignore::UserWarning", OMP_NUM_THREADS="1", **knobs)
    return env


def test_two_torchrun_agents_on_two_node_ranks_train_one_run(smoke_data, tmp_path):
    endpoint = f"127.0.0.1:{_free_port()}"
    log = tmp_path / "run" / "mlperf.log"
    env = clean_env(
        SEED="21", RESULT_DIR=str(tmp_path / "run"), SMOKE_DATA_DIR=str(Path(smoke_data.data_dir).parent), **SHRUNK
    )
    agents = []
    for node_rank in (0, 1):
        # The recipe of docs/CLUSTER.md; is_host names the agent that serves the rendezvous store
        # (both addresses are this machine's here, so each would otherwise try to).
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "2",
            "--nproc-per-node",
            "1",
            "--node-rank",
            str(node_rank),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            endpoint,
            "--rdzv-id",
            "llama31-test",
            "--rdzv-conf",
            f"is_host={int(node_rank == 0)},join_timeout=120",
            "-m",
            "benchmark.train",
            "--log-file",
            str(log),
        ]
        out = open(tmp_path / f"node{node_rank}.out", "w")  # noqa: SIM115 - closed below
        agents.append((subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT), out))
    codes = []
    try:
        for proc, _ in agents:
            codes.append(proc.wait(timeout=400))
    finally:
        for proc, out in agents:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()
    outputs = [(tmp_path / f"node{n}.out").read_text() for n in (0, 1)]
    assert codes == [0, 0], "\n".join(o[-4000:] for o in outputs)
    text = "\n".join(outputs)
    # Rank 0 prints the rendezvous once, with the world and every rank's node rank.
    assert text.count("[distributed] rendezvous") == 1, text[-4000:]
    assert re.search(r"\[distributed\] rendezvous MASTER_ADDR=\S+ MASTER_PORT=\d+ world size 2 backend gloo", text)
    node_ranks = sorted(re.findall(r"\[distributed\] rank (\d): node rank (\d), local rank 0", text))
    assert [r for r, _ in node_ranks] == ["0", "1"] and sorted(n for _, n in node_ranks) == ["0", "1"], node_ranks
    # One log, written by rank 0 alone, with one seed; the target reached; the smoke profile passes.
    assert sorted(p.name for p in log.parent.glob("*.log")) == ["mlperf.log"]
    events = mllog_events(log)
    assert [e["value"] for e in events if e["key"] == "seed"] == [21]
    values = {e["key"]: e["value"] for e in events}
    assert values["submission_platform"].startswith("2xCPU")
    assert values["gradient_accumulation_steps"] == 1  # smoke GBS 16 = 2 replicas x MBS 8
    assert events[-1]["key"] == "run_stop" and events[-1]["metadata"]["status"] == "success"
    from compliance.check import check_log

    report = check_log(log, profile="smoke")
    assert report.passed, report.format()
