"""FP8 trains like bf16: the same Llama-shaped model, seed and data, in bf16 (two seeds) and FP8.

Run (a GPU with TransformerEngine; data from dev/synthetic_c4.sh):
    python dev/fp8_vs_bf16.py --data PREPROCESSED_PATH --tokenizer TOKENIZER_PATH [--steps 320]
        [--variant NAME:KEY=VALUE[,KEY=VALUE...] ...]
Each --variant adds one more FP8 run (seed 1, FP8=1 and the knobs given), named fp8-NAME, for example
    --variant attn:FP8_RECIPE=delayed,FP8_AMAX_HISTORY=1024,FP8_AMAX_ALGO=max,FP8_ATTENTION=1
Prints one JSON line per run (train loss every 20 steps, the eval curve, wall time) and a summary:
the largest FP8-minus-bf16 eval difference (against bf16 seed 1) against the two bf16 seeds' own
difference, for the plain FP8 run and, under "fp8_runs", for each FP8 run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``NAME:KEY=VALUE[,KEY=VALUE...]`` as (NAME, {KEY: VALUE}); each KEY a knob of the training
    configuration (a misspelt one would otherwise give a second plain FP8 run)."""
    from benchmark.config import knob_fields

    knobs = {f.metadata["env"] for _, f in knob_fields() if f.metadata.get("env")}
    usage = f"{text!r}: write NAME:KEY=VALUE[,KEY=VALUE...], for example attn:FP8_ATTENTION=1"
    name, sep, settings = text.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not settings:
        raise argparse.ArgumentTypeError(usage)
    env = {}
    for item in settings.split(","):
        key, eq, value = item.partition("=")
        if not eq or not value:
            raise argparse.ArgumentTypeError(usage)
        if key not in knobs:
            raise argparse.ArgumentTypeError(f"{text!r}: {key!r} is not a knob of the training configuration")
        if key in env:
            raise argparse.ArgumentTypeError(f"{text!r}: {key} is given twice")
        env[key] = value
    return name, env


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--steps", type=int, default=320)
    p.add_argument("--out", default="", help="also write the JSON lines to this file")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        type=parse_variant,
        metavar="NAME:KEY=VALUE[,KEY=VALUE...]",
        help="one more FP8 run (seed 1, FP8=1 and these knobs) named fp8-NAME, compared like the plain FP8 run; "
        "repeatable",
    )
    return p


def main() -> int:
    p = parser()
    a = p.parse_args()
    names = [name for name, _ in a.variant]
    if len(set(names)) < len(names):
        p.error(f"--variant: each NAME once (given: {', '.join(names)})")
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
        # Head size 128 and 4 query heads per KV group, as in the 8B: FP8 attention's kernels depend on
        # the head size (TE has none for some small ones).
        "NUM_HEADS": "8",
        "NUM_KV_GROUPS": "2",
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
    runs += [(f"fp8-{name}", "1", {"FP8": "1", **env}) for name, env in a.variant]
    results = {}
    lines = []
    for name, seed, extra in runs:
        cfg = build_config(env={**base, "SEED": seed, "RESULT_DIR": f"/tmp/fp8cmp/{name}{seed}", **extra})
        t0 = time.perf_counter()
        r = run(cfg, log_path=Path(f"/tmp/fp8cmp/{name}{seed}.log"), echo=False)
        wall = time.perf_counter() - t0
        record = {
            "run": f"{name}-seed{seed}",
            "env": extra,
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
    # Each FP8 run's largest eval difference against bf16 from the same seed.
    gaps = {
        name: max(abs(x - y) for x, y in zip(ev[(name, seed)], ev[("bf16", "1")], strict=True))
        for name, seed, _ in runs
        if name != "bf16"
    }
    fp8_gap = gaps["fp8"]
    final = (ev[("fp8", "1")][-1], ev[("bf16", "1")][-1], ev[("bf16", "2")][-1])
    summary = {
        "summary": "fp8 vs bf16",
        "largest_eval_gap_fp8_vs_bf16_same_seed": round(fp8_gap, 4),
        "largest_eval_gap_bf16_seed1_vs_seed2": round(seed_gap, 4),
        "final_eval_fp8_bf16s1_bf16s2": [round(x, 4) for x in final],
        "within_seed_spread": fp8_gap <= max(seed_gap, 0.01),
        "fp8_runs": {
            name: {
                "largest_eval_gap_vs_bf16_seed1": round(gap, 4),
                "final_eval": round(ev[(name, "1")][-1], 4),
                "within_seed_spread": gap <= max(seed_gap, 0.01),
            }
            for name, gap in gaps.items()
        },
    }
    lines.append(json.dumps(summary))
    print(lines[-1], flush=True)
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
