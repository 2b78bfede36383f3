"""What the two peers share: their flags, the transformers config, weight init, timing, the JSON line.

Not an entry point; see benchmark/peers/hf_llama.py and benchmark/peers/hf_llama_fsdp.py.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch

from benchmark.config import ModelConfig, TrainConfig
from benchmark.flops import flops_per_token, peak_flops

# Llama 3.1's RoPE frequency scaling besides the factor, which comes from ModelConfig. The benchmark's
# GPTModel uses the same values (Megatron-Core's defaults for `rope_scaling=True`), so the peer runs
# the same model; the scaling only rescales the rotary frequencies and adds no FLOPs.
LLAMA31_ROPE = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
# Llama 3.1's context length; with the llama3 rope type it is not used by the computation.
MAX_POSITIONS = 131072
# A constant learning rate: the peers time steps and do not train toward anything.
LR = 1e-4


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be 0 or more")
    return value


def add_arguments(p: argparse.ArgumentParser, layers: int) -> None:
    """The flags both peers take; `layers` is the default number of decoder layers."""
    m = ModelConfig()
    p.add_argument(
        "--layers",
        type=positive_int,
        default=layers,
        help=f"decoder layers (default {layers}; the 8B model has {m.num_layers})",
    )
    p.add_argument("--seq", type=positive_int, default=m.seq_length, help="tokens per sequence (default %(default)s)")
    p.add_argument("--mbs", type=positive_int, default=1, help="sequences per step and device (default 1)")
    p.add_argument("--compile", action="store_true", help="torch.compile each decoder layer")
    p.add_argument("--warmup", type=non_negative_int, default=3, help="untimed steps first (default 3)")
    p.add_argument(
        "--steps", type=positive_int, default=8, help="timed steps; the step time is their median (default 8)"
    )
    p.add_argument("--label", default="", help="free text copied into the JSON line")
    p.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default="cuda",
        help="cuda (default) or cpu, the latter for a tiny shape in tests",
    )
    shape = add_shape_arguments(p, "model shape (defaults: Llama 3.1 8B; shrink them to run on a CPU)")
    shape.add_argument(
        "--vocab",
        type=positive_int,
        default=128256,
        help="vocabulary rows of the embedding and the output layer (default %(default)s)",
    )


def add_shape_arguments(p: argparse.ArgumentParser, title: str):
    """--hidden, --ffn, --heads, --kv-heads (the 8B's by default), in a group of their own, returned;
    the peers and benchmark.perf take the same."""
    m = ModelConfig()
    shape = p.add_argument_group(title)
    shape.add_argument("--hidden", type=positive_int, default=m.hidden_size, help="model width (default %(default)s)")
    shape.add_argument(
        "--ffn", type=positive_int, default=m.ffn_hidden_size, help="SwiGLU inner width (default %(default)s)"
    )
    shape.add_argument(
        "--heads", type=positive_int, default=m.num_attention_heads, help="attention heads (default %(default)s)"
    )
    shape.add_argument(
        "--kv-heads", type=positive_int, default=m.num_query_groups, help="key/value heads, GQA (default %(default)s)"
    )
    return shape


def check_arguments(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Reject shapes transformers would fail on later, and a CUDA run without a CUDA device (exit 2)."""
    if a.hidden % a.heads:
        p.error(f"--hidden {a.hidden} is not a multiple of --heads {a.heads}")
    if a.heads % a.kv_heads:
        p.error(f"--heads {a.heads} is not a multiple of --kv-heads {a.kv_heads}")
    if (a.hidden // a.heads) % 2:
        p.error(f"head size {a.hidden // a.heads} (--hidden / --heads) must be even for RoPE")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible (use --device cpu with a tiny shape)")


def model_config(a: argparse.Namespace) -> ModelConfig:
    """The peer's shape as the project's ModelConfig, for benchmark.flops and the Llama constants."""
    return ModelConfig(
        num_layers=a.layers,
        hidden_size=a.hidden,
        ffn_hidden_size=a.ffn,
        num_attention_heads=a.heads,
        num_query_groups=a.kv_heads,
        seq_length=a.seq,
        vocab_size=a.vocab,
    )


def llama_config(m: ModelConfig, vocab: int):
    """transformers' LlamaConfig for Llama 3.1 at m's shape: GQA, llama3 RoPE, untied embeddings.

    transformers 5 takes the rotary settings as one `rope_parameters` dict with `rope_theta` inside
    (`rope_theta=` and `rope_scaling=` are only accepted as legacy keywords).
    """
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=m.hidden_size,
        intermediate_size=m.ffn_hidden_size,
        num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.num_query_groups,
        head_dim=m.head_dim,
        rms_norm_eps=m.norm_eps,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        use_cache=False,
        attn_implementation="sdpa",
        initializer_range=m.init_std,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": float(m.rotary_base),
            "factor": m.rope_scaling_factor,
            **LLAMA31_ROPE,
        },
    )


def build_on_meta(config):
    """LlamaForCausalLM(config) on the meta device: shapes only, no memory and no init yet.

    transformers' own init would run once on memory that init_weights overwrites anyway, and at
    the 8B shape it would hold the whole fp32 model on one device before any sharding.
    """
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        return LlamaForCausalLM(config)


def _scaled(name: str) -> bool:
    """The layers' output projections, which Megatron-Core initialises with the scaled std."""
    return name.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight"))


@torch.no_grad()
def init_weights(model, config, m: ModelConfig) -> None:
    """The benchmark's init: normal(0, init_std), the RMSNorm scales at 1.0, fp32 rotary frequencies.

    As Megatron-Core's GPTModel does: the attention output projection and the second MLP linear of
    every layer (o_proj, down_proj; Megatron's linear_proj, linear_fc2) get std init_std / sqrt(2 L)
    (its default output_layer_init_method), everything else, the embedding and the output layer
    included, init_std. For a model materialised with `to_empty`, whose tensors hold whatever memory
    they got. The rotary frequencies are non-persistent buffers computed from the config; they are
    set again here in fp32 whatever the parameters' dtype, as Megatron keeps them (a bf16 copy
    would round them to 3 significant digits and shift the angles at long positions). Any other
    buffer would be garbage, hence the check.
    """
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    out_std = m.init_std / math.sqrt(2.0 * m.num_layers)
    for name, param in model.named_parameters():
        # Under FSDP2 a parameter is a DTensor; each rank fills its own shard from its own generator
        # (seeded by the caller), which needs none of DTensor's cross-rank random-number bookkeeping.
        local = param.to_local() if hasattr(param, "to_local") else param
        if name.endswith("norm.weight"):
            local.fill_(1.0)
        else:
            local.normal_(0.0, out_std if _scaled(name) else m.init_std)
    for name, _ in model.named_buffers():
        if not name.startswith("model.rotary_emb."):
            raise RuntimeError(f"buffer {name} is not re-initialised after to_empty; extend init_weights")
    rotary = model.model.rotary_emb
    device = rotary.inv_freq.device
    fresh = LlamaRotaryEmbedding(config)
    # Registered anew (not copied into) so that the fp32 values survive a bf16 model.
    rotary.register_buffer("inv_freq", fresh.inv_freq.to(device), persistent=False)
    rotary.register_buffer("original_inv_freq", fresh.original_inv_freq.to(device), persistent=False)
    rotary.attention_scaling = fresh.attention_scaling


def adamw(model, **kwargs) -> torch.optim.AdamW:
    """AdamW with the benchmark's betas, eps and weight decay (benchmark/config.py TrainConfig).

    As the benchmark's engine does, the 1-D parameters (the RMSNorm scales) are not decayed.
    """
    t = TrainConfig()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR,
        betas=(t.adam_beta1, t.adam_beta2),
        eps=t.adam_eps,
        **kwargs,
    )


def causal_lm_loss(model, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of tokens[:, 1:] given tokens[:, :-1] (seq predictions per row),
    on fp32 logits as transformers' own loss computes it; the same inputs/labels split as benchmark.perf."""
    logits = model(input_ids=tokens[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())


def time_steps(
    step: Callable[[torch.Tensor], torch.Tensor],
    batch: Callable[[], torch.Tensor],
    warmup: int,
    steps: int,
    sync: Callable[[], None],
) -> tuple[list[float], list[torch.Tensor]]:
    """Run warmup + steps calls of step(batch()); return the timed steps' seconds and detached losses.

    The batch is drawn before the clock starts, and each step is timed alone between two device
    synchronisations, as benchmark.perf does, so that the median ignores the odd slow step (a
    recompilation, a collective that waited) instead of spreading it over a mean.
    """
    times, losses = [], []
    for i in range(warmup + steps):
        tokens = batch()
        sync()
        t0 = time.perf_counter()
        loss = step(tokens)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            losses.append(loss)
    return times, losses


def _significant(x: float, digits: int = 4) -> float:
    """x to `digits` significant figures: TFLOP/s stay readable on a GPU (460.3) and non-zero for a
    tiny CPU shape (0.01234), where benchmark.perf's one decimal would print 0.0."""
    return float(f"{x:.{digits}g}")


def record(
    bench: str,
    a: argparse.Namespace,
    device_name: str,
    gpus: int,
    step_s: float,
    losses: list[float],
    peak_mem_bytes: float | None,
    *,
    recompute: bool,
    precision: str,
    spec: str,
    engine: str,
) -> dict:
    """The JSON line: every field of benchmark.perf's, in its order, then the peer's model shape.

    Per-device figures: each device trains `mbs` sequences of `seq` tokens per step, so the global
    batch is mbs x gpus, all of it data parallel. Megatron's own knobs mean nothing here: no
    tensor, pipeline or context parallelism (1), no layer spec or Megatron fusions (null).
    """
    m = model_config(a)
    tokens_per_gpu = a.mbs * a.seq / step_s
    flops = tokens_per_gpu * flops_per_token(m, a.vocab)
    peak = peak_flops(device_name)
    return {
        "bench": bench,
        "label": a.label,
        "device": device_name,
        "gpus": gpus,
        "layers": a.layers,
        "seq": a.seq,
        "mbs": a.mbs,
        "gbs": a.mbs * gpus,
        "tp": 1,
        "pp": 1,
        "dp": gpus,
        "recompute": recompute,
        "recompute_layers": 0,
        "fusions": None,
        "compile": a.compile,
        "cp": 1,
        "layer_spec": None,
        "precision": precision,
        "precision_aware_optimizer": None,
        "spec": spec + (", layers compiled" if a.compile else ""),
        "engine": engine,
        "step_time_s": _significant(step_s, 6),
        "tokens_per_sec_per_gpu": round(tokens_per_gpu, 1),
        "tflops_per_gpu": _significant(flops / 1e12),
        "mfu": round(flops / peak, 4) if peak else None,
        "peak_mem_gib": round(peak_mem_bytes / 2**30, 2) if peak_mem_bytes is not None else None,
        "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
        "hidden": a.hidden,
        "ffn": a.ffn,
        "heads": a.heads,
        "kv_heads": a.kv_heads,
        "vocab": a.vocab,
    }
