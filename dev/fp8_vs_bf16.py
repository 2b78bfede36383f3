"""FP8 trains like bf16: the same Llama-shaped model, seed and data, in bf16 (two seeds) and FP8.

Run (a GPU with TransformerEngine; data from dev/synthetic_c4.sh):
    python dev/fp8_vs_bf16.py --data PREPROCESSED_PATH --tokenizer TOKENIZER_PATH [--steps 320]
Prints one JSON line per run (train loss every 20 steps, the eval curve, tokens/s) and a summary:
the largest FP8-minus-bf16 eval difference against the two bf16 seeds' own difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--steps", type=int, default=320)
    p.add_argument("--out", default="", help="also write the JSON lines to this file")
    a = p.parse_args()
    from benchmark.config import build_config
    from benchmark.train import run

    gbs, seq, eval_steps = 32, 1024, 40
    base = {
        "PRESET": "smoke",
        "DEVICE": "cuda",
        "BENCHMARK_AREA": "en6",
        "LAYER_SPEC": "te",
        "PREPROCESSED_PATH": a.data,
        "TOKENIZER_PATH": a.tokenizer,
        "NUM_LAYERS": "8",
        "HIDDEN_SIZE": "1024",
        "FFN_HIDDEN_SIZE": "3584",
        "NUM_HEADS": "16",
        "NUM_KV_GROUPS": "4",
        "SEQ_LENGTH": str(seq),
        "GBS": str(gbs),
        "MBS": "8",
        "LR": "1e-3",
        "WARMUP_SAMPLES": str(20 * gbs),
        "MAX_STEPS": "2000",
        "EVAL_EVERY": str(eval_steps * gbs),
        "EVAL_SAMPLES": "128",
        "EVAL_SET": "file-order",
        "TARGET": "0.01",
        "MAX_TRAIN_SAMPLES": str(a.steps * gbs),
        "LOG_EVERY": "1000",
    }
    runs = [("bf16", "1", {}), ("bf16", "2", {}), ("fp8", "1", {"FP8": "1"})]
    results = {}
    lines = []
    for name, seed, extra in runs:
        cfg = build_config(env={**base, "SEED": seed, "RESULT_DIR": f"/tmp/fp8cmp/{name}{seed}", **extra})
        t0 = time.perf_counter()
        r = run(cfg, log_path=Path(f"/tmp/fp8cmp/{name}{seed}.log"), echo=False)
        wall = time.perf_counter() - t0
        record = {
            "run": f"{name}-seed{seed}",
            "steps": r.steps,
            "wall_s": round(wall, 1),
            "train_loss_every_20": [round(x, 4) for x in r.train_losses[::20]],
            "eval": [(s, round(v, 4)) for s, v in r.eval_curve],
        }
        results[(name, seed)] = r
        lines.append(json.dumps(record))
        print(lines[-1], flush=True)
    ev = {k: [v for _, v in r.eval_curve] for k, r in results.items()}
    seed_gap = max(abs(x - y) for x, y in zip(ev[("bf16", "1")], ev[("bf16", "2")], strict=True))
    fp8_gap = max(abs(x - y) for x, y in zip(ev[("fp8", "1")], ev[("bf16", "1")], strict=True))
    final = (ev[("fp8", "1")][-1], ev[("bf16", "1")][-1], ev[("bf16", "2")][-1])
    summary = {
        "summary": "fp8 vs bf16",
        "largest_eval_gap_fp8_vs_bf16_same_seed": round(fp8_gap, 4),
        "largest_eval_gap_bf16_seed1_vs_seed2": round(seed_gap, 4),
        "final_eval_fp8_bf16s1_bf16s2": [round(x, 4) for x in final],
        "within_seed_spread": fp8_gap <= max(seed_gap, 0.01),
    }
    lines.append(json.dumps(summary))
    print(lines[-1], flush=True)
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
