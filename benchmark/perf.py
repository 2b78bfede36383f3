"""Throughput of the training step: one JSON line per configuration (docs/PERFORMANCE.md).

Run:  python -m benchmark.perf --layers 8 --mbs 1                       (one GPU)
      python -m benchmark.perf --layers 8 --layer-spec te --fp8             (TE spec, FP8 hybrid)
      torchrun --nproc-per-node 2 -m benchmark.perf --tp 2 --gbs 16     (several GPUs)

Random tokens through the same engine the benchmark uses (GPTModel, Megatron DDP + distributed
optimizer on GPU), on the llama31_8b shape unless flags shrink it. Warm-up steps are excluded; the
step time is the median of the timed steps. Tokens/s/GPU and MFU use the causal FLOP count of
benchmark/flops.py with the model's real vocabulary (128,256 rows) and a 989 TFLOP/s bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from benchmark.config import (
    ConfigError,
    ModelConfig,
    build_config,
    grad_accumulation_steps,
    uses_precision_aware_optimizer,
)
from benchmark.flops import flops_per_token, parameter_count, peak_flops
from benchmark.peers.common import add_shape_arguments, non_negative_int, positive_int

# Above this many parameters a CPU takes minutes per step (about 20 GB of fp32 weights, gradients
# and Adam state at 1e9): such a size is refused on CPU, with the flags that shrink it.
CPU_MAX_PARAMETERS = 1_000_000_000


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark.perf", description=__doc__.split("\n\n")[0])
    m = ModelConfig()
    p.add_argument(
        "--layers", type=positive_int, default=m.num_layers, help="transformer layers (default %(default)s, the 8B's)"
    )
    p.add_argument("--seq", type=positive_int, default=m.seq_length, help="tokens per sequence (default %(default)s)")
    p.add_argument("--mbs", type=positive_int, default=1, help="sequences per micro-batch and GPU (default 1)")
    p.add_argument(
        "--gbs", type=non_negative_int, default=0, help="global batch; 0 (default) = MBS x data-parallel size"
    )
    p.add_argument("--tp", type=positive_int, default=1, help="tensor-parallel size (default 1)")
    p.add_argument("--pp", type=positive_int, default=1, help="pipeline-parallel size (default 1)")
    p.add_argument("--recompute", action="store_true", help="full activation recomputation")
    p.add_argument(
        "--recompute-layers",
        type=int,
        default=0,
        help="with --recompute: only the first N layers of each pipeline stage; 0 = all",
    )
    p.add_argument(
        "--vocab",
        type=positive_int,
        default=128256,
        help="rows of the embedding and output layers (default %(default)s)",
    )
    p.add_argument(
        "--fusions",
        default="auto",
        choices=["auto", "on", "off"],
        help="Megatron's fused SwiGLU and cross-entropy, and the wgrad fusion (FUSIONS; default auto: on on GPU)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile each transformer layer")
    p.add_argument(
        "--layer-spec",
        default="auto",
        choices=["auto", "te", "local"],
        help="TransformerEngine's layer spec or the local one (auto: te where TE imports)",
    )
    p.add_argument("--fp8", action="store_true", help="FP8 hybrid through TransformerEngine (TE spec)")
    p.add_argument(
        "--fp8-recipe",
        default="tensorwise",
        choices=["tensorwise", "delayed", "blockwise"],
        help="FP8 scaling (FP8_RECIPE; default %(default)s)",
    )
    p.add_argument(
        "--fp8-amax-history", type=positive_int, default=1, help="delayed scaling: amax history length (default 1)"
    )
    p.add_argument(
        "--fp8-amax-algo",
        default="most_recent",
        choices=["most_recent", "max"],
        help="delayed scaling: amax from the history (default %(default)s)",
    )
    p.add_argument(
        "--fp8-attention",
        action="store_true",
        help="with --fp8: attention (TE's fused attention) in FP8 too (FP8_ATTENTION)",
    )
    p.add_argument(
        "--fp8-param-gather",
        default="auto",
        choices=["auto", "on", "off"],
        help="with --fp8: FP8 weights in the distributed optimizer (auto: on with several "
        "data-parallel ranks, as FP8_PARAM_GATHER)",
    )
    p.add_argument(
        "--precision-aware-optimizer",
        default="auto",
        choices=["auto", "on", "off"],
        help="TE's FusedAdam keeps the fp32 master weights and reads the bf16 gradients (PRECISION_AWARE_OPTIMIZER; "
        "auto: on under the TE spec in bf16 with bf16 weights); --opt still overrides it",
    )
    p.add_argument("--cp", type=positive_int, default=1, help="context-parallel size, TE spec (default 1)")
    p.add_argument(
        "--no-wgrad-fusion",
        action="store_true",
        help="bf16 weight gradients added to main_grad by the DDP hook (to measure the fused path)",
    )
    p.add_argument(
        "--tc",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="experiment: set a TransformerConfig field after the project maps the config "
        "(VALUE read as a Python literal, else as text); repeatable",
    )
    p.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="experiment: set a Megatron-Core OptimizerConfig field (GPU), for example "
        "use_precision_aware_optimizer=True or main_grads_dtype=bfloat16 (dtypes by torch name)",
    )
    p.add_argument("--profile", default="", help="write a torch.profiler table of the timed steps to this file")
    p.add_argument("--warmup", type=non_negative_int, default=3, help="untimed steps first (default 3)")
    p.add_argument(
        "--steps", type=positive_int, default=8, help="timed steps; the step time is their median (default 8)"
    )
    p.add_argument("--label", default="", help="free text copied into the JSON line")
    add_shape_arguments(
        p,
        "model shape (defaults: Llama 3.1 8B; on a CPU shrink it, e.g. --layers 2 --hidden 64 --ffn 192 --heads 4 "
        "--kv-heads 2 --vocab 256 --seq 64)",
    )
    return p


def parse(argv=None) -> argparse.Namespace:
    return parser().parse_args(argv)


def _overrides(items: list[str]) -> dict:
    import ast

    out = {}
    for item in items:
        field, sep, text = item.partition("=")
        if not sep or not field.isidentifier():
            raise ValueError(f"{item!r}: write FIELD=VALUE, for example fp8_dot_product_attention=True")
        try:
            out[field] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[field] = text
    return out


def _patch_model(overrides: dict) -> None:
    """Wrap benchmark.model's config mapping for one experiment (this process only)."""
    import dataclasses

    from benchmark import model

    mapped = model.transformer_config
    fields = {f.name for f in dataclasses.fields(model.TransformerConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise SystemExit(f"error: --tc {', '.join(unknown)}: not a TransformerConfig field of this megatron-core")

    def transformer_config(cfg, **kw):
        # replace() runs __post_init__ again, so Megatron-Core validates the combination.
        return dataclasses.replace(mapped(cfg, **kw), **overrides)

    model.transformer_config = transformer_config


def main(argv=None) -> int:
    a = parse(argv)
    from benchmark.engine import make_engine
    from benchmark.model import build_model, describe_precision
    from benchmark.train import distributed, seed_everything

    world = int(os.environ.get("WORLD_SIZE", "1"))
    dp = world // (a.tp * a.pp * a.cp)
    gbs = a.gbs or a.mbs * dp
    env = {
        "PRESET": "smoke",
        "NUM_LAYERS": str(a.layers),
        "HIDDEN_SIZE": str(a.hidden),
        "FFN_HIDDEN_SIZE": str(a.ffn),
        "NUM_HEADS": str(a.heads),
        "NUM_KV_GROUPS": str(a.kv_heads),
        "SEQ_LENGTH": str(a.seq),
        "GBS": str(gbs),
        "MBS": str(a.mbs),
        "TP": str(a.tp),
        "PP": str(a.pp),
        "RECOMPUTE": "1" if a.recompute else "0",
        "RECOMPUTE_LAYERS": str(a.recompute_layers),
        "EVAL_EVERY": str(gbs),
        "EVAL_SAMPLES": str(a.mbs * dp),
        "LR": "1e-4",
        "WARMUP_SAMPLES": "0",
        "VOCAB_SIZE": str(a.vocab),
        "FUSIONS": a.fusions,
        "COMPILE": "1" if a.compile else "0",
        "CP": str(a.cp),
        "LAYER_SPEC": a.layer_spec,
        "FP8": "1" if a.fp8 else "0",
        "FP8_RECIPE": a.fp8_recipe,
        "FP8_AMAX_HISTORY": str(a.fp8_amax_history),
        "FP8_AMAX_ALGO": a.fp8_amax_algo,
        "FP8_ATTENTION": "1" if a.fp8_attention else "0",
        "FP8_PARAM_GATHER": a.fp8_param_gather,
        "PRECISION_AWARE_OPTIMIZER": a.precision_aware_optimizer,
    }
    try:
        cfg = build_config(env=env)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n_params = parameter_count(cfg.model, a.vocab)
    if cfg.parallel.device == "cpu" and n_params > CPU_MAX_PARAMETERS:
        print(
            f"error: this shape has {n_params / 1e9:.2f} B parameters and this run is on CPU, where a step would "
            "take minutes: shrink it (for example --layers 2 --hidden 64 --ffn 192 --heads 4 --kv-heads 2 --vocab "
            "256 --seq 64), or run on a GPU",
            file=sys.stderr,
        )
        return 2
    try:
        overrides = _overrides(a.tc)
    except ValueError as err:
        print(f"error: --tc {err}", file=sys.stderr)
        return 2
    try:
        opt_overrides = {
            k: getattr(torch, v) if isinstance(v, str) and isinstance(getattr(torch, v, None), torch.dtype) else v
            for k, v in _overrides(a.opt).items()
        }
    except ValueError as err:
        print(f"error: --opt {err}", file=sys.stderr)
        return 2
    if overrides:
        _patch_model(overrides)
    with distributed(cfg) as device:
        from megatron.core import parallel_state

        seed_everything(0, device)
        if overrides.get("cuda_graph_impl", "none") != "none" and device.type == "cuda":
            from megatron.core import tensor_parallel

            # Megatron-Core's graph capture needs an RNG tracker whose states live in graph-safe
            # generators; TE's attention accepts only TE's own tracker class for that.
            tensor_parallel.model_parallel_cuda_manual_seed(
                0, te_rng_tracker=cfg.parallel.layer_spec == "te", use_cudagraphable_rng=True, force_reset_rng=True
            )
        on_gpu = device.type == "cuda"
        bf16 = on_gpu
        model, spec_name = build_model(
            cfg, a.vocab, bf16=bf16, use_cpu_initialization=not on_gpu, wgrad_fusion=not a.no_wgrad_fusion
        )
        if on_gpu:
            model.cuda(device)
        engine = make_engine(cfg, model, device, bf16, optimizer_overrides=opt_overrides or None)
        rank0 = torch.distributed.get_rank() == 0
        if rank0:
            print(
                f"[perf] {spec_name}: {n_params:,} parameters on {world} x {device.type}; "
                f"{a.warmup} warm-up and {a.steps} timed steps of {gbs} x {a.seq} tokens",
                file=sys.stderr,
                flush=True,
            )
        accum = grad_accumulation_steps(cfg, world)
        gen = torch.Generator().manual_seed(parallel_state.get_data_parallel_rank())

        def micro_batches():
            out = []
            for _ in range(accum):
                x = torch.randint(0, a.vocab, (a.mbs, a.seq + 1), generator=gen)
                out.append({"tokens": x[:, :-1], "labels": x[:, 1:]})
            return out

        times, losses = [], []
        profiler = None
        for i in range(a.warmup + a.steps):
            if i == a.warmup and a.profile and torch.distributed.get_rank() == 0:
                profiler = torch.profiler.profile(
                    activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
                )
                profiler.__enter__()
            batch = micro_batches()
            if on_gpu:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss, _ = engine.train_step(batch, 1e-4)
            if on_gpu:
                torch.cuda.synchronize()
            if i >= a.warmup:
                times.append(time.perf_counter() - t0)
                losses.append(loss)
            if rank0:
                what = "warm-up" if i < a.warmup else "timed"
                print(
                    f"[perf] step {i + 1}/{a.warmup + a.steps} ({what}): {time.perf_counter() - t0:.3f} s",
                    file=sys.stderr,
                )
        if profiler is not None:
            profiler.__exit__(None, None, None)
            sort = "cuda_time_total" if on_gpu else "cpu_time_total"
            with open(a.profile, "w") as f:
                f.write(profiler.key_averages().table(sort_by=sort, row_limit=60, max_name_column_width=90))
        step = statistics.median(times)
        tokens_per_gpu = gbs * a.seq / step / world
        name = torch.cuda.get_device_name(device) if on_gpu else "cpu"
        peak = peak_flops(name)
        fpt = flops_per_token(cfg.model, a.vocab)
        record = {
            "bench": "benchmark.perf",
            "label": a.label,
            "device": name,
            "gpus": world,
            "layers": a.layers,
            "seq": a.seq,
            "mbs": a.mbs,
            "gbs": gbs,
            "tp": a.tp,
            "pp": a.pp,
            "dp": dp,
            "recompute": a.recompute,
            "recompute_layers": a.recompute_layers,
            "fusions": a.fusions,
            "compile": a.compile,
            "cp": a.cp,
            "layer_spec": cfg.parallel.layer_spec,
            "precision": describe_precision(cfg, bf16),
            # What the engine chose from the knob; an --opt override shows under "experiment".
            "precision_aware_optimizer": "on" if uses_precision_aware_optimizer(cfg, world) else "off",
            "spec": spec_name,
            "engine": type(engine).__name__,
            "step_time_s": round(step, 4),
            "tokens_per_sec_per_gpu": round(tokens_per_gpu, 1),
            "tflops_per_gpu": round(tokens_per_gpu * fpt / 1e12, 1),
            "mfu": round(tokens_per_gpu * fpt / peak, 4) if peak else None,
            "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if on_gpu else None,
            "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
            "hidden": a.hidden,
            "ffn": a.ffn,
            "heads": a.heads,
            "kv_heads": a.kv_heads,
            "vocab": a.vocab,
        }
        if overrides or opt_overrides:
            record["experiment"] = {k: repr(v) for k, v in {**overrides, **opt_overrides}.items()}
        if torch.distributed.get_rank() == 0:
            print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
