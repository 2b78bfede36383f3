"""Llama 3.1 as a Megatron-Core GPTModel: the settings in one place, and the layer spec.

Layer spec (LAYER_SPEC, resolved in benchmark/config.py):
- ``te``: Megatron-Core's TransformerEngine spec, the production path: RMSNorm fused into the QKV and
  FC1 linears, TE's attention (cuDNN fused or flash), TE's fused RoPE (on the unsplit QKV) and
  cross-entropy, the MLP through TE's operation fuser (TP 1; bf16 or FP8 tensorwise), TE's own
  weight-gradient accumulation into main_grad, FP8 (FP8=1), context and sequence parallelism.
- ``local``: Megatron-Core's local spec with its core attention swapped for :class:`SDPAttention`,
  which calls ``torch.nn.functional.scaled_dot_product_attention`` (the local spec's unfused attention
  materialises the [b, heads, s, s] score matrix and runs out of memory at sequence length 8192); the
  path for CPUs and machines without TE.
Both specs name their weights the same way in dist-checkpoints (the local spec maps its norms onto
TE's fused names), so a checkpoint of one loads into the other.
"""

from __future__ import annotations

import math
import os
import sys

import torch
import torch.nn.functional as F
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.models.gpt.gpt_model import GPTModel
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig

from benchmark import mcore_workarounds, wgrad
from benchmark.config import Config, uses_fp8_param_gather, uses_sequence_parallel, world_size_from_env


def padded_vocab_size(tokenizer_size: int, tensor_parallel: int) -> int:
    """Round the tokenizer's size up to a multiple of 128 x TP, as Megatron does (128,256 stays)."""
    multiple = 128 * tensor_parallel
    return math.ceil(tokenizer_size / multiple) * multiple


class SDPAttention(MegatronModule):
    """Causal core attention through PyTorch's scaled_dot_product_attention, with native GQA.

    Same constructor and forward signature as Megatron-Core's DotProductAttention, so the local spec
    takes it as a drop-in submodule. Inputs are [s, b, heads, head_dim]; output is [s, b, hidden].
    """

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection=None,
    ):
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("context parallelism needs TransformerEngine's attention; CP must be 1 here")
        if attn_mask_type != AttnMaskType.causal:
            raise ValueError(f"SDPAttention implements causal attention only, got {attn_mask_type}")
        self.softmax_scale = softmax_scale
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout

    def forward(
        self,
        query,
        key,
        value,
        attention_mask,
        attn_mask_type=None,
        attention_bias=None,
        packed_seq_params=None,
    ):
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError("SDPAttention supports neither packed sequences nor an attention bias")
        # [s, b, h, d] -> [b, h, s, d]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            is_causal=True,
            scale=self.softmax_scale,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=q.size(1) != k.size(1),
        )
        s, b = out.size(2), out.size(0)
        return out.permute(2, 0, 1, 3).reshape(s, b, -1)


def transformer_config(
    cfg: Config, *, bf16: bool, use_cpu_initialization: bool, wgrad_fusion: bool = True
) -> TransformerConfig:
    """Map the Llama 3.1 settings (and the resolved layer spec, FP8, parallelism) onto TransformerConfig.

    wgrad_fusion=False keeps the weight gradients out of main_grad's fused GEMM where it would be on
    (``python -m benchmark.perf --no-wgrad-fusion`` measures the fused path that way).
    """
    m, p = cfg.model, cfg.parallel
    te = p.layer_spec == "te"
    # Megatron's SwiGLU and cross-entropy fusions are torch.compile'd functions; FUSIONS=auto is on on
    # GPU (benchmark.config.resolve_auto).
    fusions = p.fusions == "on"
    # Weight gradients straight into DDP's main_grad (bf16, as the gradients are kept): GPU only
    # (the CPU engine has no main_grad).
    # TE's linears bring their own kernel; Megatron's output layer uses Apex's or benchmark.wgrad's.
    wgrad_fusion = wgrad_fusion and fusions and not use_cpu_initialization and wgrad.available()
    fp8 = {}
    if p.fp8:
        fp8 = dict(
            fp8="hybrid",  # E4M3 forward, E5M2 gradients
            fp8_recipe=p.fp8_recipe,
            fp8_amax_history_len=p.fp8_amax_history,
            fp8_amax_compute_algo=p.fp8_amax_algo,
            fp8_param=uses_fp8_param_gather(cfg, world_size_from_env()),
            # TE's fused attention in FP8 too (NVIDIA's FP8_DPA; their v5.1 FP8 runs keep it in 16 bits).
            fp8_dot_product_attention=p.fp8_attention,
            # Amax reductions over the tensor-parallel group only, as NVIDIA's v5.1 runs set it.
            tp_only_amax_red=True,
        )
    return TransformerConfig(
        num_layers=m.num_layers,
        hidden_size=m.hidden_size,
        ffn_hidden_size=m.ffn_hidden_size,
        num_attention_heads=m.num_attention_heads,
        num_query_groups=m.num_query_groups,
        kv_channels=m.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=m.norm_eps,
        gated_linear_unit=True,  # SwiGLU
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        bias_activation_fusion=fusions,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        apply_rope_fusion=fusions and te,
        # RoPE applied to the fused QKV output without splitting it first (NVIDIA's v5.1 8B runs:
        # FUSED_QKV_ROPE=True in config_common_8b.sh).
        fused_single_qkv_rope=fusions and te,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        init_method_std=m.init_std,
        tensor_model_parallel_size=p.tensor_parallel,
        pipeline_model_parallel_size=p.pipeline_parallel,
        context_parallel_size=p.context_parallel,
        sequence_parallel=uses_sequence_parallel(cfg),
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        pipeline_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_cpu_initialization=use_cpu_initialization,
        perform_initialization=True,
        # All layers (uniform, one per recompute block), or only the first RECOMPUTE_LAYERS of each stage.
        recompute_granularity="full" if p.recompute else None,
        recompute_method=("block" if p.recompute_layers else "uniform") if p.recompute else None,
        recompute_num_layers=(p.recompute_layers or 1) if p.recompute else None,
        gradient_accumulation_fusion=wgrad_fusion,
        cross_entropy_loss_fusion=fusions,
        # TE's cross-entropy never holds the fp32 logits (NVIDIA's v5.1 CE_FUSION_IMPL=te).
        cross_entropy_fusion_impl="te" if te and fusions else "native",
        **fp8,
    )


def uses_te_op_fuser(cfg: Config) -> bool:
    """The MLP through TE's operation-based API (fused ops, the same weights): under the TE spec with
    fusions on, at TP 1, as NVIDIA's v5.1 8B runs (USE_TE_OPS=True in config_common_8b.sh, False in
    their TP 2 configurations), in bf16 or FP8 with tensorwise scaling (NVIDIA's recipe).

    Not with the other FP8 recipes: TE's fused ops refuse blockwise scaling, and megatron-core 0.16.1's
    TEFusedMLP keeps its ops outside the module tree, so their delayed-scaling history is not in a
    checkpoint and a resumed run would not repeat the uninterrupted one (measured on an H200).
    """
    p = cfg.parallel
    stateless = not p.fp8 or p.fp8_recipe == "tensorwise"
    return p.layer_spec == "te" and p.fusions == "on" and p.tensor_parallel == 1 and stateless


# TransformerEngine's settings for FP8 attention beside the layers' recipe. TE 2.12 reads them from the
# environment once, when its attention module is imported, into that module's globals, and consults
# those at every forward (DotProductAttention.init_fp8_metadata); the module name and the globals are
# TE 2.12's.
_TE_ATTENTION_MODULE = "transformer_engine.pytorch.attention.dot_product_attention.dot_product_attention"
_TE_ATTENTION_SETTINGS = {  # environment variable: (module global, type, TE's default)
    "NVTE_DPA_FP8_RECIPE": ("_dpa_fp8_recipe", str, ""),
    "NVTE_DPA_FP8DS_AMAX_HISTLEN": ("_dpa_fp8ds_amax_histlen", int, "1"),
    "NVTE_DPA_FP8DS_AMAX_ALGO": ("_dpa_fp8ds_amax_algo", str, "most_recent"),
}
# What the user's environment set, so that a model built without the settings gets the user's own.
_USERS_ATTENTION_SETTINGS = {name: os.environ.get(name) for name in _TE_ATTENTION_SETTINGS}


def attention_fp8_settings(cfg: Config, capability: tuple[int, int]) -> dict[str, str]:
    """TE's attention settings for FP8_ATTENTION=1 under tensorwise scaling on a GPU of this compute
    capability, or {} where none are needed.

    TE 2.12 has FP8 attention kernels under current (tensorwise) scaling only from sm100 (Blackwell) on;
    on earlier GPUs (the H200 is sm90) it finds no attention backend at all. There attention takes
    delayed scaling for itself (TE's "current-scaling linears, delayed-scaling attention" mode) with
    FP8_AMAX_HISTORY and FP8_AMAX_ALGO (TE's defaults 1 and most_recent are the knobs' defaults), while
    the linear layers keep tensorwise scaling.
    """
    p = cfg.parallel
    if not (p.fp8 and p.fp8_attention and p.fp8_recipe == "tensorwise") or capability >= (10, 0):
        return {}
    return {
        "NVTE_DPA_FP8_RECIPE": "DelayedScaling",
        "NVTE_DPA_FP8DS_AMAX_HISTLEN": str(p.fp8_amax_history),
        "NVTE_DPA_FP8DS_AMAX_ALGO": p.fp8_amax_algo,
    }


def apply_attention_fp8_settings(settings: dict[str, str]) -> None:
    """Give TE's attention these settings (the user's own environment for those not given), in the
    environment for a TE imported later and in its attention module if it is imported already."""
    module = sys.modules.get(_TE_ATTENTION_MODULE)
    for name, (attribute, kind, default) in _TE_ATTENTION_SETTINGS.items():
        value = settings.get(name, _USERS_ATTENTION_SETTINGS[name])
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
        if module is not None:
            setattr(module, attribute, kind(default if value is None else value))


def layer_spec(cfg: Config) -> tuple[ModuleSpec, str]:
    """The resolved layer spec, and a one-line description of it."""
    if cfg.parallel.layer_spec == "te":
        import transformer_engine
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        op_fuser = uses_te_op_fuser(cfg)
        return get_gpt_layer_with_transformer_engine_spec(use_te_op_fuser=op_fuser), (
            f"megatron-core TransformerEngine spec (TE {transformer_engine.__version__})"
            + (", MLP through TE's op fuser" if op_fuser else "")
        )
    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    spec.submodules.self_attention.submodules.core_attention = SDPAttention
    return spec, "megatron-core local spec + SDPA core attention"


def describe_precision(cfg: Config, bf16: bool) -> str:
    p = cfg.parallel
    if not p.fp8:
        return "bf16" if bf16 else "fp32"
    text = f"FP8 hybrid, {p.fp8_recipe} scaling"
    if p.fp8_recipe == "delayed":
        text += f" (amax history {p.fp8_amax_history}, {p.fp8_amax_algo})"
    fp8_weights = uses_fp8_param_gather(cfg, world_size_from_env())
    return (
        text
        + (", FP8 weights" if fp8_weights else "")
        + (", FP8 attention" if p.fp8_attention else "")
        + ", bf16 elsewhere"
    )


def build_model(
    cfg: Config, vocab_size: int, *, bf16: bool, use_cpu_initialization: bool, wgrad_fusion: bool = True
) -> tuple[GPTModel, str]:
    """A Llama 3.1 GPTModel (untied embeddings, RoPE base 500000 with 3.1 scaling); wgrad_fusion: see
    transformer_config."""
    spec, spec_name = layer_spec(cfg)
    config = transformer_config(
        cfg, bf16=bf16, use_cpu_initialization=use_cpu_initialization, wgrad_fusion=wgrad_fusion
    )
    if config.gradient_accumulation_fusion:
        where = mcore_workarounds.install_wgrad_kernel()
        if cfg.parallel.layer_spec == "te":
            where = f"TE in the layers, {where} for the output layer"
        spec_name += f", weight gradients accumulated into main_grad ({where})"
    if config.cross_entropy_loss_fusion:
        spec_name += f", {config.cross_entropy_fusion_impl} fused cross-entropy"
    if config.apply_rope_fusion:
        spec_name += ", TE fused RoPE" + (" on the unsplit QKV" if config.fused_single_qkv_rope else "")
    if cfg.parallel.layer_spec == "te":
        capability = torch.cuda.get_device_capability() if torch.cuda.is_available() else (0, 0)
        settings = attention_fp8_settings(cfg, capability)
        apply_attention_fp8_settings(settings)
        if settings:
            spec_name += ", FP8 attention under TE's delayed scaling (no tensorwise FP8 attention before sm100)"
    if config.sequence_parallel:
        spec_name += ", sequence parallel"
    if config.recompute_granularity:
        which = config.recompute_num_layers if config.recompute_method == "block" else "all"
        spec_name += f", recompute {which} layers"
    block = spec
    if cfg.parallel.layer_spec == "local" and cfg.parallel.device == "cpu":
        block = mcore_workarounds.block_with_the_layers_norm(spec, config)
    model = GPTModel(
        config=config,
        transformer_layer_spec=block,
        vocab_size=vocab_size,
        max_sequence_length=cfg.model.seq_length,
        pre_process=True,
        post_process=True,
        share_embeddings_and_output_weights=False,
        position_embedding_type="rope",
        rotary_base=cfg.model.rotary_base,
        rope_scaling=True,
        rope_scaling_factor=cfg.model.rope_scaling_factor,
    )
    if cfg.parallel.compile:
        for layer in model.decoder.layers:
            layer.compile()
        spec_name += ", layers compiled"
    return model, spec_name
