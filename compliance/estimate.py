"""Project the llama31_8b time to train from a measured throughput and the reference convergence.

    python -m compliance.estimate --tokens-per-sec-per-gpu 14451 --gpus 8 --gbs 16
    python -m compliance.estimate --from-perf perf.jsonl            # the last JSON line with the keys
    python -m compliance.estimate --from-perf perf.jsonl --gpus 16  # flags override the file

Samples to converge come from the reference convergence points (RCPs) as mlperf-logging's RCP checker
computes them (compliance.rcp): the olympic mean of the 20 reference runs of the batch size, or the
checker's interpolation between two pruned RCPs, with the fastest and slowest reference run and the
fastest mean the RCP check accepts. Time = samples / (tokens per second / sequence length). Only
training steps are counted: evaluation, which runs inside the timed region, is reported
separately as a rough figure, and initialization is not part of the time to train at all.

A layout the trainer would refuse (GBS, --mbs, --tp, --pp, --cp against the GPU count, judged by
benchmark.config.check_layout, the trainer's own validation) gets no projection: the estimate exits 2
with the trainer's message and the layouts that would work: GBS 16 on 32 GPUs at TP 1 says
"GBS 16 at TP 1 allows at most 16 GPUs; use TP 2, 4 or 8 for 32 GPUs".
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmark.config import ConfigError, check_layout
from compliance.rcp import RcpError, reference_point
from compliance.rules import BENCHMARK, DEFAULT_RULESET, RULESETS

# The benchmark's numbers (docs/FIDELITY.md, "The rules in numbers").
SEQ_LEN = 8192  # tokens per sample
EVAL_EVERY_SAMPLES = 12_288  # training samples between evals
EVAL_SEQUENCES = 1_024  # sequences per eval
# A forward pass costs about a third of forward + backward, so evaluation is assumed to process
# tokens three times as fast as training. Only used for the rough evaluation figure.
EVAL_SPEEDUP = 3.0
# Accepted names in a --from-perf JSON line, first one preferred.
_ALIASES = {
    "tokens_per_sec_per_gpu": ("tokens_per_sec_per_gpu", "tokens_per_s_per_gpu", "tok_per_sec_per_gpu"),
    "gpus": ("gpus", "num_gpus", "world_size"),
    "gbs": ("gbs", "global_batch_size"),
    "seq_len": ("seq_len", "seq", "seq_length", "max_sequence_length"),
    # The parallel layout the measurement ran (benchmark.perf writes these), checked as the trainer would.
    "mbs": ("mbs", "micro_batch_size"),
    "tp": ("tp", "tensor_parallel"),
    "pp": ("pp", "pipeline_parallel"),
    "cp": ("cp", "context_parallel"),
    # Context only, shown with the estimate (benchmark.perf writes both).
    "layers": ("layers", "num_layers"),
    "device": ("device",),
}
FULL_MODEL_LAYERS = 32  # Llama 3.1 8B
# The layout flags, each 1 unless given.
LAYOUT_KEYS = ("mbs", "tp", "pp", "cp")


class EstimateError(Exception):
    """Input that cannot give an estimate; the message says why."""


@dataclass(frozen=True)
class Convergence:
    """Samples to converge for one global batch size, from the library's RCP checker."""

    gbs: int
    mean: float  # olympic mean (best and worst reference run dropped), or its interpolation
    low: float | None  # fastest reference run; None for an interpolated point, which has no runs
    high: float | None  # slowest reference run
    runs: int  # reference runs behind the point; 0 when interpolated
    min_mean: float  # the fastest submission mean the RCP check accepts
    source: str  # the RCP file
    interpolated_between: tuple[int, int] | None = None


@dataclass(frozen=True)
class Estimate:
    """A projected time to train and what it leaves out."""

    tokens_per_sec_per_gpu: float
    gpus: int
    gbs: int
    seq_len: int
    convergence: Convergence

    @property
    def samples_per_sec(self) -> float:
        return self.tokens_per_sec_per_gpu * self.gpus / self.seq_len

    def minutes(self, samples: float) -> float:
        return samples / self.samples_per_sec / 60

    @property
    def evals(self) -> int:
        return math.ceil(self.convergence.mean / EVAL_EVERY_SAMPLES)

    @property
    def eval_minutes(self) -> float:
        eval_tokens = self.evals * EVAL_SEQUENCES * self.seq_len
        return eval_tokens / (self.tokens_per_sec_per_gpu * self.gpus * EVAL_SPEEDUP) / 60

    def format(self) -> str:
        c = self.convergence
        total_tps = self.tokens_per_sec_per_gpu * self.gpus
        mean_min = self.minutes(c.mean)
        origin = f"olympic mean of {c.runs} reference runs"
        samples_range = steps_range = time_range = ""
        if c.interpolated_between:
            low_bs, high_bs = c.interpolated_between
            origin = f"no RCP for GBS {c.gbs}: the RCP checker's interpolation between GBS {low_bs} and {high_bs}"
        if c.low is not None and c.high is not None:
            samples_range = f"; runs {c.low:,.0f} to {c.high:,.0f}"
            steps_range = f" (runs {c.low / self.gbs:,.0f} to {c.high / self.gbs:,.0f})"
            time_range = f" (runs {self.minutes(c.low):,.1f} to {self.minutes(c.high):,.1f} min)"
        lines = [
            f"{BENCHMARK} projected time to train (GBS {self.gbs}, {self.gpus} GPUs)",
            f"  throughput:          {self.tokens_per_sec_per_gpu:,.0f} tokens/s/GPU x {self.gpus} GPUs = "
            f"{total_tps:,.0f} tokens/s = {self.samples_per_sec:,.3f} samples/s of {self.seq_len:,} tokens",
            f"  samples to converge: {c.mean:,.0f} ({origin}){samples_range}",
            f"                       from {c.source}",
            f"  fastest accepted:    a mean of {c.min_mean:,.0f} samples passes the RCP check "
            f"({self.minutes(c.min_mean):,.1f} min)",
            f"  steps at GBS {self.gbs}:     {c.mean / self.gbs:,.0f}{steps_range}",
            f"  time to train:       {mean_min:,.1f} min = {mean_min / 60:.2f} h{time_range}, training steps only",
            "  not counted:",
            f"    - evaluation, which runs inside the timed region: about {self.evals} evals of "
            f"{EVAL_SEQUENCES:,} sequences (one every {EVAL_EVERY_SAMPLES:,} samples), roughly "
            f"+{self.eval_minutes:,.1f} min if evaluation processes tokens {EVAL_SPEEDUP:g}x as fast as training "
            "(forward only)",
            "    - start-up inside the timed region (first-step compilation, data loader warm-up), checkpoints",
            "    - initialization before run_start (not part of the time to train; closed limit 30 min)",
        ]
        if self.seq_len != SEQ_LEN:
            lines.append(f"  note: the RCPs were measured at sequence length {SEQ_LEN:,}, not {self.seq_len:,}")
        return "\n".join(lines)


def convergence(gbs: int, ruleset: str = DEFAULT_RULESET) -> Convergence:
    """Samples to converge at `gbs`, as the RCP checker holds a result against them."""
    try:
        point = reference_point(gbs, ruleset)
    except RcpError as err:
        raise EstimateError(str(err)) from None
    low = min(point.runs) if point.runs else None
    high = max(point.runs) if point.runs else None
    return Convergence(
        gbs, point.mean, low, high, len(point.runs), point.min_mean, point.source, point.interpolated_between
    )


def _layout_name(gbs: int, mbs: int, tp: int, pp: int, cp: int) -> str:
    """'GBS 16 at TP 1', naming MBS, PP and CP only where they are not 1."""
    name = f"GBS {gbs}" + (f" with MBS {mbs}" if mbs != 1 else "") + f" at TP {tp}"
    return name + "".join(f", {key} {value}" for key, value in (("PP", pp), ("CP", cp)) if value != 1)


def _accepted(gpus: int, gbs: int, mbs: int, tp: int, pp: int, cp: int, seq_len: int) -> bool:
    try:
        check_layout(gpus, gbs, mbs, tp, pp, cp, seq_len)
    except ConfigError:
        return False
    return True


def layout_advice(
    gpus: int, gbs: int, mbs: int = 1, tp: int = 1, pp: int = 1, cp: int = 1, seq_len: int = SEQ_LEN
) -> str:
    """What would work instead of a refused layout: the most GPUs at this TP, PP and CP, and the TPs for `gpus`.

    Both come from asking the trainer's own check (benchmark.config.check_layout) about each candidate.
    """
    model_parallel = tp * pp * cp
    # The data-parallel size must divide GBS / MBS, so no more than GBS / MBS replicas can be used.
    most = next(
        (
            dp * model_parallel
            for dp in range(gbs // mbs, 0, -1)
            if _accepted(dp * model_parallel, gbs, mbs, tp, pp, cp, seq_len)
        ),
        None,
    )
    here = _layout_name(gbs, mbs, tp, pp, cp)
    parts = [f"{here} allows at most {most} GPUs" if most else f"{here} is refused at any GPU count"]
    tps = [t for t in range(1, gpus + 1) if gpus % t == 0 and t != tp and _accepted(gpus, gbs, mbs, t, pp, cp, seq_len)]
    if tps:
        choices = " or ".join(", ".join(str(t) for t in tps).rsplit(", ", 1))
        parts.append(f"use TP {choices} for {gpus} GPUs")
    else:
        rest = "".join(f", {key} {value}" for key, value in (("MBS", mbs), ("PP", pp), ("CP", cp)) if value != 1)
        parts.append(f"no TP splits GBS {gbs}{rest} over {gpus} GPUs")
    return "; ".join(parts)


def estimate(
    tokens_per_sec_per_gpu: float,
    gpus: int,
    gbs: int,
    seq_len: int = SEQ_LEN,
    ruleset: str = DEFAULT_RULESET,
    *,
    mbs: int = 1,
    tp: int = 1,
    pp: int = 1,
    cp: int = 1,
) -> Estimate:
    """Projected time to train; raises EstimateError on values that cannot give one.

    A layout the trainer would refuse (benchmark.config's validation of GBS, MBS, TP, PP and CP
    against the GPU count) is one of them: a projection for a run that cannot start would mislead.
    """
    if not tokens_per_sec_per_gpu > 0:
        raise EstimateError(f"tokens per second per GPU must be positive, got {tokens_per_sec_per_gpu}")
    values = (("gpus", gpus), ("gbs", gbs), ("seq_len", seq_len), ("mbs", mbs), ("tp", tp), ("pp", pp), ("cp", cp))
    for name, value in values:
        if int(value) != value or value <= 0:
            raise EstimateError(f"{name} must be a positive integer, got {value}")
    gpus, gbs, seq_len, mbs, tp, pp, cp = (int(value) for _, value in values)
    point = convergence(gbs, ruleset)
    try:
        check_layout(gpus, gbs, mbs, tp, pp, cp, seq_len)
    except ConfigError as err:
        raise EstimateError(
            f"the trainer refuses this layout: {err}\n  {layout_advice(gpus, gbs, mbs, tp, pp, cp, seq_len)}"
        ) from None
    return Estimate(float(tokens_per_sec_per_gpu), gpus, gbs, seq_len, point)


def read_perf(path: Path) -> dict[str, float]:
    """The measurement keys of the last JSON line in `path` that carries tokens_per_sec_per_gpu."""
    try:
        text = path.read_text()
    except OSError as err:
        raise EstimateError(f"{path}: cannot read ({err.strerror or err})") from err
    for lineno, line in reversed(list(enumerate(text.splitlines(), start=1))):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        found = {}
        for key, names in _ALIASES.items():
            for name in names:
                if name in record:
                    value = record[name]
                    if key == "device":
                        found[key] = str(value)
                        break
                    if not isinstance(value, int | float) or isinstance(value, bool):
                        raise EstimateError(f"{path} line {lineno}: '{name}' is not a number: {value!r}")
                    found[key] = value
                    break
        if "tokens_per_sec_per_gpu" in found:
            return found
    raise EstimateError(f"{path}: no JSON line with tokens_per_sec_per_gpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m compliance.estimate",
        description=(
            f"Project the {BENCHMARK} time to train from a throughput: the reference convergence points' "
            "samples to converge for the global batch size (the RCP checker's olympic mean, or its "
            "interpolation), divided by the samples per second. Evaluation overhead is not in the "
            "projection; the output states it separately."
        ),
    )
    parser.add_argument(
        "--tokens-per-sec-per-gpu", type=float, metavar="X", help="measured training throughput per GPU (tokens/s)"
    )
    parser.add_argument("--gpus", type=int, metavar="N", help="number of GPUs")
    parser.add_argument(
        "--gbs", type=int, metavar="B", help="global batch size in sequences: one with an RCP, or one between two RCPs"
    )
    parser.add_argument("--seq-len", type=int, metavar="L", help=f"tokens per sequence (default {SEQ_LEN})")
    for key, what in (
        ("mbs", "micro-batch size"),
        ("tp", "tensor-parallel size"),
        ("pp", "pipeline-parallel size"),
        ("cp", "context-parallel size"),
    ):
        parser.add_argument(
            f"--{key}",
            type=int,
            metavar="N",
            help=f"{what} (default 1); a layout the trainer would refuse for the GPU count exits 2 saying what works",
        )
    parser.add_argument(
        "--from-perf",
        type=Path,
        metavar="FILE",
        help="read the values from the last JSON line in FILE with tokens_per_sec_per_gpu "
        "(also gpus, gbs, seq_len); flags given as well override it",
    )
    parser.add_argument(
        "--ruleset", choices=RULESETS, default=DEFAULT_RULESET, help="which ruleset's RCPs to use (default %(default)s)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: `python -m compliance.estimate --tokens-per-sec-per-gpu X --gpus N --gbs B`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    values: dict[str, float] = {}
    try:
        if args.from_perf is not None:
            values.update(read_perf(args.from_perf))
        for key in ("tokens_per_sec_per_gpu", "gpus", "gbs", "seq_len", *LAYOUT_KEYS):
            if getattr(args, key) is not None:
                values[key] = getattr(args, key)
        missing = [k for k in ("tokens_per_sec_per_gpu", "gpus", "gbs") if k not in values]
        if missing:
            flags = ", ".join("--" + k.replace("_", "-") for k in missing)
            parser.error(f"missing {flags} (give them as flags or in the --from-perf file)")
        result = estimate(
            values["tokens_per_sec_per_gpu"],
            values["gpus"],
            values["gbs"],
            values.get("seq_len", SEQ_LEN),
            args.ruleset,
            **{key: values.get(key, 1) for key in LAYOUT_KEYS},
        )
    except EstimateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.format())
    if "device" in values:
        print(f"  measured on: {values['device']} (from {args.from_perf})")
    if "layers" in values and values["layers"] != FULL_MODEL_LAYERS:
        print(
            f"  warning: the measurement ran {values['layers']:g} layers, the 8B has {FULL_MODEL_LAYERS}; "
            "this projection is not for the full model"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
