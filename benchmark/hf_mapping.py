"""Key map between Megatron-Core GPTModel (local spec) and Hugging Face LlamaForCausalLM state dicts.

Megatron-Core fuses per layer: q, k and v into ``linear_qkv`` (interleaved group by group: for each
KV group its query heads, then its key head, then its value head) and gate and up into
``linear_fc1`` (gate rows first). Everything else maps one to one. Used by the numerical check
against transformers' Llama and by the checkpoint converters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LlamaShape:
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_query_groups: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def heads_per_group(self) -> int:
        return self.num_attention_heads // self.num_query_groups


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, shape: LlamaShape) -> torch.Tensor:
    d, g, hpg = shape.head_dim, shape.num_query_groups, shape.heads_per_group
    hidden = q.shape[1]
    fused = torch.cat(
        [q.reshape(g, hpg * d, hidden), k.reshape(g, d, hidden), v.reshape(g, d, hidden)], dim=1
    )
    return fused.reshape(g * (hpg + 2) * d, hidden)


def split_qkv(qkv: torch.Tensor, shape: LlamaShape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    d, g, hpg = shape.head_dim, shape.num_query_groups, shape.heads_per_group
    hidden = qkv.shape[1]
    grouped = qkv.reshape(g, (hpg + 2) * d, hidden)
    q = grouped[:, : hpg * d].reshape(g * hpg * d, hidden)
    k = grouped[:, hpg * d : (hpg + 1) * d].reshape(g * d, hidden)
    v = grouped[:, (hpg + 1) * d :].reshape(g * d, hidden)
    return q, k, v


def megatron_to_hf(sd: dict[str, torch.Tensor], shape: LlamaShape) -> dict[str, torch.Tensor]:
    """GPTModel state dict (no ``module.`` prefix, no extra state) -> LlamaForCausalLM state dict."""
    out = {
        "model.embed_tokens.weight": sd["embedding.word_embeddings.weight"],
        "model.norm.weight": sd["decoder.final_layernorm.weight"],
        "lm_head.weight": sd["output_layer.weight"],
    }
    for i in range(shape.num_layers):
        src, dst = f"decoder.layers.{i}.", f"model.layers.{i}."
        q, k, v = split_qkv(sd[src + "self_attention.linear_qkv.weight"], shape)
        gate, up = sd[src + "mlp.linear_fc1.weight"].chunk(2, dim=0)
        out.update({
            dst + "input_layernorm.weight": sd[src + "input_layernorm.weight"],
            dst + "self_attn.q_proj.weight": q,
            dst + "self_attn.k_proj.weight": k,
            dst + "self_attn.v_proj.weight": v,
            dst + "self_attn.o_proj.weight": sd[src + "self_attention.linear_proj.weight"],
            dst + "post_attention_layernorm.weight": sd[src + "pre_mlp_layernorm.weight"],
            dst + "mlp.gate_proj.weight": gate,
            dst + "mlp.up_proj.weight": up,
            dst + "mlp.down_proj.weight": sd[src + "mlp.linear_fc2.weight"],
        })
    return {k: v.contiguous() for k, v in out.items()}


def hf_to_megatron(sd: dict[str, torch.Tensor], shape: LlamaShape) -> dict[str, torch.Tensor]:
    """LlamaForCausalLM state dict -> GPTModel (local spec) state dict."""
    out = {
        "embedding.word_embeddings.weight": sd["model.embed_tokens.weight"],
        "decoder.final_layernorm.weight": sd["model.norm.weight"],
        "output_layer.weight": sd["lm_head.weight"],
    }
    for i in range(shape.num_layers):
        src, dst = f"model.layers.{i}.", f"decoder.layers.{i}."
        out.update({
            dst + "input_layernorm.weight": sd[src + "input_layernorm.weight"],
            dst + "self_attention.linear_qkv.weight": fuse_qkv(
                sd[src + "self_attn.q_proj.weight"], sd[src + "self_attn.k_proj.weight"],
                sd[src + "self_attn.v_proj.weight"], shape,
            ),
            dst + "self_attention.linear_proj.weight": sd[src + "self_attn.o_proj.weight"],
            dst + "pre_mlp_layernorm.weight": sd[src + "post_attention_layernorm.weight"],
            dst + "mlp.linear_fc1.weight": torch.cat(
                [sd[src + "mlp.gate_proj.weight"], sd[src + "mlp.up_proj.weight"]], dim=0
            ),
            dst + "mlp.linear_fc2.weight": sd[src + "mlp.down_proj.weight"],
        })
    return {k: v.contiguous() for k, v in out.items()}
