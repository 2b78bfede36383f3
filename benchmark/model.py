"""Llama 3.1 as a Megatron-Core GPTModel: the settings in one place, and the layer spec.

Layer spec (DESIGN): TransformerEngine's spec when TE imports and a GPU is in use (FP8 possible);
otherwise Megatron-Core's local spec with its core attention swapped for :class:`SDPAttention`,
which calls ``torch.nn.functional.scaled_dot_product_attention`` (the local spec's unfused attention
materialises the [b, heads, s, s] score matrix and runs out of memory at sequence length 8192).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.models.gpt.gpt_model import GPTModel
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig

from benchmark import wgrad
from benchmark.config import Config


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
        self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
        packed_seq_params=None,
    ):
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError("SDPAttention supports neither packed sequences nor an attention bias")
        # [s, b, h, d] -> [b, h, s, d]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=self.softmax_scale,
            dropout_p=self.dropout if self.training else 0.0, enable_gqa=q.size(1) != k.size(1),
        )
        s, b = out.size(2), out.size(0)
        return out.permute(2, 0, 1, 3).reshape(s, b, -1)


def transformer_config(cfg: Config, *, bf16: bool, use_cpu_initialization: bool) -> TransformerConfig:
    """Map the Llama 3.1 settings onto Megatron-Core's TransformerConfig."""
    m, p = cfg.model, cfg.parallel
    # Megatron's SwiGLU and cross-entropy fusions are torch.compile'd functions; on by default on GPU.
    fusions = p.fusions == "on" or (p.fusions == "auto" and not use_cpu_initialization)
    # Weight gradients straight into DDP's fp32 main_grad: GPU only (the CPU engine has no main_grad).
    wgrad_fusion = fusions and not use_cpu_initialization and wgrad.available()
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
        apply_rope_fusion=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        init_method_std=m.init_std,
        tensor_model_parallel_size=p.tensor_parallel,
        pipeline_model_parallel_size=p.pipeline_parallel,
        context_parallel_size=p.context_parallel,
        sequence_parallel=False,
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
        cross_entropy_fusion_impl="native",
    )


def layer_spec() -> tuple[ModuleSpec, str]:
    """The local spec with SDPA core attention, and a one-line description of the choice."""
    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    spec.submodules.self_attention.submodules.core_attention = SDPAttention
    return spec, "megatron-core local spec + SDPA core attention"


def build_model(cfg: Config, vocab_size: int, *, bf16: bool, use_cpu_initialization: bool) -> tuple[GPTModel, str]:
    """A Llama 3.1 GPTModel (untied embeddings, RoPE base 500000 with 3.1 scaling)."""
    spec, spec_name = layer_spec()
    config = transformer_config(cfg, bf16=bf16, use_cpu_initialization=use_cpu_initialization)
    if config.gradient_accumulation_fusion:
        spec_name += f", weight gradients into fp32 main_grad ({wgrad.install()})"
    if config.recompute_granularity:
        which = config.recompute_num_layers if config.recompute_method == "block" else "all"
        spec_name += f", recompute {which} layers"
    model = GPTModel(
        config=config,
        transformer_layer_spec=spec,
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
