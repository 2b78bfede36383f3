"""One rank of the data-parallel CPU tests (tests/test_data_parallel.py), started by torchrun.

Usage: python -m torch.distributed.run ... tests/dp_worker.py OUT_DIR DATA_DIR TOKENIZER_DIR
Runs the tiny configuration of the tests three times in this process group's processes: a whole run,
then the same run paused after its first block with a checkpoint and resumed from it. Rank 0 writes
what each run produced to OUT_DIR/result.json (atomically) for the test to compare with one process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.train import run  # noqa: E402
from tests.helpers import TINY_MODEL, smoke_config  # noqa: E402

# The knobs of the comparison; tests/test_data_parallel.py runs one process with the same ones.
KNOBS = {
    **TINY_MODEL,
    "LOG_EVERY": "1000",
    "GBS": "16",
    "MBS": "4",
    "EVAL_EVERY": "32",
    "EVAL_SAMPLES": "16",
    "MAX_TRAIN_SAMPLES": "96",
    "TARGET": "0.01",
    "SEED": "3",
}


def summary(result) -> dict:
    return {
        "status": result.status,
        "reason": result.reason,
        "steps": result.steps,
        "samples": result.samples,
        "train_losses": result.train_losses,
        "eval_curve": [list(p) for p in result.eval_curve],
    }


def main() -> None:
    out, data_dir, tokenizer = (Path(a) for a in sys.argv[1:4])
    data = SimpleNamespace(data_dir=data_dir, tokenizer_dir=tokenizer)
    rank = int(os.environ["RANK"])
    # One process group for the three runs (run() keeps a group it did not create): torchrun's store
    # serves one rendezvous per process group, so a second init in the same processes would not meet.
    torch.distributed.init_process_group("gloo")
    results = {}
    for name, extra in (
        ("whole", {}),
        ("part1", {"CHECKPOINT_DIR": out / "ckpt", "JOB_SAMPLES": "32"}),
        ("part2", {"CHECKPOINT_DIR": out / "ckpt", "JOB_SAMPLES": "0"}),
    ):
        cfg = smoke_config(data, out, {**KNOBS, **extra})
        results[name] = summary(run(cfg, log_path=out / f"{name}.log", echo=False))
    if rank == 0:
        tmp = out / "result.json.tmp"
        tmp.write_text(json.dumps(results))
        os.replace(tmp, out / "result.json")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
