"""The one key map between Hugging Face LlamaForCausalLM and Megatron-Core GPTModel state dicts.

:data:`KEY_MAP` lists every Hugging Face tensor with the Megatron-Core (local spec) tensor it lives
in. Two Megatron tensors hold several Hugging Face ones, one after the other along dim 0:
- ``linear_qkv`` holds q, k and v interleaved group by group (for each KV group its query heads,
  then its key head, then its value head), as Megatron-Core's attention splits it;
- ``linear_fc1`` holds gate then up, as Megatron-Core's SwiGLU splits it.
Everything else maps one to one. The Megatron -> Hugging Face direction is the same table read
backwards (:func:`megatron_sources`), and the names NeMo and the TransformerEngine spec save (the
norms folded into the next linear: ``linear_qkv.layer_norm_weight``, ``linear_fc1.layer_norm_weight``)
come from the renaming the local spec itself declares for its dist-checkpoints (:func:`te_name`).
Used by the numerical check against transformers' Llama, by benchmark/hf_weights.py and by the
offline converter (utils/convert.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

LAYER = "{i}"  # stands for the layer number in the names below
# (Hugging Face name, Megatron-Core local-spec name, the tensor's place in a fused Megatron tensor).
# Order within a fused tensor is the order of the rows here.
KEY_MAP: tuple[tuple[str, str, str | None], ...] = (
    ("model.embed_tokens.weight", "embedding.word_embeddings.weight", None),
    ("model.layers.{i}.input_layernorm.weight", "decoder.layers.{i}.input_layernorm.weight", None),
    ("model.layers.{i}.self_attn.q_proj.weight", "decoder.layers.{i}.self_attention.linear_qkv.weight", "qkv"),
    ("model.layers.{i}.self_attn.k_proj.weight", "decoder.layers.{i}.self_attention.linear_qkv.weight", "qkv"),
    ("model.layers.{i}.self_attn.v_proj.weight", "decoder.layers.{i}.self_attention.linear_qkv.weight", "qkv"),
    ("model.layers.{i}.self_attn.o_proj.weight", "decoder.layers.{i}.self_attention.linear_proj.weight", None),
    ("model.layers.{i}.post_attention_layernorm.weight", "decoder.layers.{i}.pre_mlp_layernorm.weight", None),
    ("model.layers.{i}.mlp.gate_proj.weight", "decoder.layers.{i}.mlp.linear_fc1.weight", "fc1"),
    ("model.layers.{i}.mlp.up_proj.weight", "decoder.layers.{i}.mlp.linear_fc1.weight", "fc1"),
    ("model.layers.{i}.mlp.down_proj.weight", "decoder.layers.{i}.mlp.linear_fc2.weight", None),
    ("model.norm.weight", "decoder.final_layernorm.weight", None),
    ("lm_head.weight", "output_layer.weight", None),
)
HF_LAYER_PREFIX = "model.layers.{i}."
MEGATRON_LAYER_PREFIX = "decoder.layers.{i}."


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
    fused = torch.cat([q.reshape(g, hpg * d, hidden), k.reshape(g, d, hidden), v.reshape(g, d, hidden)], dim=1)
    return fused.reshape(g * (hpg + 2) * d, hidden)


def split_qkv(qkv: torch.Tensor, shape: LlamaShape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    d, g, hpg = shape.head_dim, shape.num_query_groups, shape.heads_per_group
    hidden = qkv.shape[1]
    grouped = qkv.reshape(g, (hpg + 2) * d, hidden)
    q = grouped[:, : hpg * d].reshape(g * hpg * d, hidden)
    k = grouped[:, hpg * d : (hpg + 1) * d].reshape(g * d, hidden)
    v = grouped[:, (hpg + 1) * d :].reshape(g * d, hidden)
    return q, k, v


def _fuse(kind: str | None, parts: list[torch.Tensor], shape: LlamaShape) -> torch.Tensor:
    if kind is None:
        return parts[0]
    if kind == "qkv":
        return fuse_qkv(*parts, shape)
    return torch.cat(parts, dim=0)  # fc1: gate rows, then up rows


def _split(kind: str | None, fused: torch.Tensor, shape: LlamaShape) -> tuple[torch.Tensor, ...]:
    if kind is None:
        return (fused,)
    if kind == "qkv":
        return split_qkv(fused, shape)
    return fused.chunk(2, dim=0)


@dataclass(frozen=True)
class Source:
    """Where one Hugging Face tensor lives: a Megatron tensor, and its part of a fused one."""

    megatron: str
    fusion: str | None
    part: int  # 0 unless fused


@functools.cache
def megatron_sources() -> dict[str, tuple[str | None, tuple[str, ...]]]:
    """KEY_MAP inverted: Megatron name pattern -> (fusion, the Hugging Face name patterns in order)."""
    out: dict[str, tuple[str | None, tuple[str, ...]]] = {}
    for hf, mg, fusion in KEY_MAP:
        _, before = out.get(mg, (fusion, ()))
        out[mg] = (fusion, (*before, hf))
    return out


@functools.cache
def hf_sources() -> dict[str, Source]:
    """Hugging Face name pattern -> where it lives in the Megatron state dict."""
    return {
        hf: Source(mg, fusion, names.index(hf)) for mg, (fusion, names) in megatron_sources().items() for hf in names
    }


def is_layer_name(pattern: str) -> bool:
    return LAYER in pattern


def layer_numbers(pattern: str, num_layers: int) -> list[int | None]:
    """The layers a pattern has a tensor in: every one, or None for a tensor outside the layers."""
    return list(range(num_layers)) if is_layer_name(pattern) else [None]


def expand(pattern: str, num_layers: int) -> list[str]:
    """The concrete names of one pattern: itself, or one per layer."""
    return [pattern.format(i=i) for i in layer_numbers(pattern, num_layers)]


def layer_field(pattern: str, prefix: str) -> str:
    """The part of a per-layer pattern after its layer prefix (``mlp.linear_fc1.weight``)."""
    return pattern[len(prefix) :]


def to_megatron(
    get: Callable[[str], torch.Tensor], megatron: str, shape: LlamaShape, layer: int | None = None
) -> torch.Tensor:
    """The Megatron tensor named by pattern `megatron` (of `layer`, for a per-layer one), built from
    the Hugging Face tensors `get` returns by name."""
    fusion, names = megatron_sources()[megatron]
    return _fuse(fusion, [get(hf.format(i=layer)) for hf in names], shape)


def from_megatron(fused: torch.Tensor, hf: str, shape: LlamaShape) -> torch.Tensor:
    """The Hugging Face tensor named by pattern `hf`, cut from its Megatron tensor `fused`."""
    src = hf_sources()[hf]
    return _split(src.fusion, fused, shape)[src.part]


def megatron_to_hf(sd: dict[str, torch.Tensor], shape: LlamaShape) -> dict[str, torch.Tensor]:
    """GPTModel state dict (no ``module.`` prefix, no extra state) -> LlamaForCausalLM state dict."""
    out = {}
    for hf, src in hf_sources().items():
        for i in layer_numbers(hf, shape.num_layers):
            out[hf.format(i=i)] = from_megatron(sd[src.megatron.format(i=i)], hf, shape)
    return {k: v.contiguous() for k, v in out.items()}


def hf_to_megatron(sd: dict[str, torch.Tensor], shape: LlamaShape) -> dict[str, torch.Tensor]:
    """LlamaForCausalLM state dict -> GPTModel (local spec) state dict."""
    out = {}
    for mg in megatron_sources():
        for i in layer_numbers(mg, shape.num_layers):
            out[mg.format(i=i)] = to_megatron(sd.__getitem__, mg, shape, i)
    return {k: v.contiguous() for k, v in out.items()}


# ----------------------------------------------------------------------------------------------
# The names NeMo and the TransformerEngine spec save


@functools.cache
def _local_spec_keys_map() -> tuple[tuple[str, str], ...]:
    """The renaming Megatron-Core's local layer spec applies to its sharded state dict keys, so its
    checkpoints name the norms as the TransformerEngine spec's fused modules do."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    keys_map = get_gpt_layer_local_spec(normalization="RMSNorm").submodules.sharded_state_dict_keys_map
    return tuple(keys_map.items())


def te_name(megatron: str) -> str:
    """A local-spec name pattern as NeMo and the TransformerEngine spec name it:
    ``decoder.layers.{i}.input_layernorm.weight`` ->
    ``decoder.layers.{i}.self_attention.linear_qkv.layer_norm_weight``."""
    if not megatron.startswith(MEGATRON_LAYER_PREFIX):
        return megatron
    rest = layer_field(megatron, MEGATRON_LAYER_PREFIX)
    for old, new in _local_spec_keys_map():
        if rest.startswith(old):
            return MEGATRON_LAYER_PREFIX + new + rest[len(old) :]
    return megatron


def te_layer_fields() -> tuple[str, ...]:
    """The per-layer tensors in the TransformerEngine naming, after ``decoder.layers.{i}.``."""
    return tuple(layer_field(te_name(mg), MEGATRON_LAYER_PREFIX) for mg in megatron_sources() if is_layer_name(mg))


def stacked(pattern: str) -> str:
    """A per-layer name as TransformerBlock's sharded state dict and NeMo's checkpoints key the one
    tensor stacked over all layers: ``decoder.layers.{i}.X`` -> ``decoder.layers.X``."""
    return pattern.replace(LAYER + ".", "")
