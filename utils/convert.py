"""Convert Llama checkpoints between Hugging Face and NeMo 2 formats, and load them into the GPTModel.

Run:   python -m utils.convert hf-to-nemo --src HF_DIR --dst NEMO_DIR
       python -m utils.convert nemo-to-hf --src NEMO_DIR --dst HF_DIR
       python -m utils.convert --help

NeMo need not be installed: the NeMo 2 layout is written with Megatron-Core's own dist-checkpointing.

NeMo 2 layout (what ``nemo.collections.llm.import_ckpt`` writes for a Llama)::

    NEMO_DIR/context/model.yaml        the model config (NeMo's field names)
    NEMO_DIR/context/nemo_tokenizer/   the tokenizer files, when the source has them
    NEMO_DIR/weights/                  a Megatron-Core distributed checkpoint, torch_dist format:
                                       __0_0.distcp __0_1.distcp .metadata common.pt metadata.json

Weight keys are those of Megatron-Core's GPTModel under the ``module.`` prefix NeMo's wrapper adds,
named as in TransformerEngine's layer spec: the input norm is ``linear_qkv.layer_norm_weight`` and the
pre-MLP norm ``linear_fc1.layer_norm_weight``. Per-layer tensors are one global tensor per name
stacked along a leading layer axis (``decoder.layers.self_attention.linear_qkv.weight`` of shape
[num_layers, ...]), as TransformerBlock's sharded state dict lays them out. q, k and v are
interleaved group by group into ``linear_qkv``; gate and up are stacked into ``linear_fc1``
(benchmark/hf_mapping.py). TransformerEngine's modules also save an ``_extra_state`` object per
linear layer (an empty uint8 tensor when FP8 is off), which is written too so that a NeMo model built
with TransformerEngine finds every key it asks for.

Memory: HF -> NeMo holds one converted copy of the weights (torch_dist writes a checkpoint in one
call) plus one layer's source tensors; NeMo -> HF streams one tensor at a time. Safetensors are read
and written with plain file I/O rather than memory maps, so the reported peak RSS is the real one.

Python API for the training harness: :func:`load_nemo_weights_into` and :func:`load_hf_weights_into`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import resource
import shutil
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import yaml

from benchmark.hf_mapping import LlamaShape, fuse_qkv, split_qkv
from utils.errors import DataError, command, disk_full, full_disk_error, with_path
from utils.fileio import remove_stale_tmp, write_json_atomic
from utils.progress import Bar, add_flag, check_env

PREFIX = "module."  # NeMo's MegatronParallel wraps the GPTModel as `module`
WEIGHTS_DIR = "weights"
CONTEXT_DIR = "context"
TOKENIZER_DIR = "nemo_tokenizer"
# Files of a Hugging Face tokenizer folder (whichever the source has are carried along).
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja",
)
# Per-layer tensors of the NeMo layout (names after `decoder.layers.`).
LAYER_TENSORS = (
    "self_attention.linear_qkv.layer_norm_weight",
    "self_attention.linear_qkv.weight",
    "self_attention.linear_proj.weight",
    "mlp.linear_fc1.layer_norm_weight",
    "mlp.linear_fc1.weight",
    "mlp.linear_fc2.weight",
)
# Modules that carry an `_extra_state` object in a TransformerEngine-spec checkpoint.
LAYER_EXTRA_STATES = (
    "self_attention.linear_qkv", "self_attention.linear_proj", "mlp.linear_fc1", "mlp.linear_fc2",
)
# Hugging Face shards at most this large, as `save_pretrained` does by default in transformers 4.
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9


class ConvertError(DataError, ValueError):
    """The input is not what the conversion needs; the message says what is wrong and where."""


# ----------------------------------------------------------------------------------------------
# The architecture, read from either side


@dataclass
class LlamaArch:
    """What a Llama checkpoint's config says, in Hugging Face terms."""

    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    vocab_size: int
    norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    # Llama 3 frequency scaling: {"factor", "low_freq_factor", "high_freq_factor",
    # "original_max_position_embeddings"}; None = plain RoPE.
    rope_scaling: dict | None = None
    init_std: float = 0.02
    generation_config: dict = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def shape(self) -> LlamaShape:
        return LlamaShape(self.num_layers, self.hidden_size, self.num_attention_heads, self.num_query_groups)

    def validate(self, source: str) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ConvertError(f"{source}: hidden size {self.hidden_size} is not divisible by "
                               f"{self.num_attention_heads} attention heads")
        if self.num_attention_heads % self.num_query_groups:
            raise ConvertError(f"{source}: {self.num_attention_heads} attention heads are not divisible by "
                               f"{self.num_query_groups} key/value heads")

    def hf_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor of the LlamaForCausalLM state dict, with its shape."""
        h, f, d = self.hidden_size, self.ffn_hidden_size, self.head_dim
        q, kv = self.num_attention_heads * d, self.num_query_groups * d
        shapes = {"model.embed_tokens.weight": (self.vocab_size, h)}
        for i in range(self.num_layers):
            p = f"model.layers.{i}."
            shapes.update({
                p + "input_layernorm.weight": (h,),
                p + "self_attn.q_proj.weight": (q, h),
                p + "self_attn.k_proj.weight": (kv, h),
                p + "self_attn.v_proj.weight": (kv, h),
                p + "self_attn.o_proj.weight": (h, q),
                p + "post_attention_layernorm.weight": (h,),
                p + "mlp.gate_proj.weight": (f, h),
                p + "mlp.up_proj.weight": (f, h),
                p + "mlp.down_proj.weight": (h, f),
            })
        shapes["model.norm.weight"] = (h,)
        shapes["lm_head.weight"] = (self.vocab_size, h)
        return shapes

    def nemo_layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """One layer's tensors in the NeMo layout (without the leading layer axis)."""
        h, f, d = self.hidden_size, self.ffn_hidden_size, self.head_dim
        qkv = (self.num_attention_heads + 2 * self.num_query_groups) * d
        return {
            "self_attention.linear_qkv.layer_norm_weight": (h,),
            "self_attention.linear_qkv.weight": (qkv, h),
            "self_attention.linear_proj.weight": (h, self.num_attention_heads * d),
            "mlp.linear_fc1.layer_norm_weight": (h,),
            "mlp.linear_fc1.weight": (2 * f, h),
            "mlp.linear_fc2.weight": (h, f),
        }


def _hf_rope(cfg: dict, source: str) -> tuple[float, dict | None]:
    """RoPE base and Llama 3 scaling from a config.json of transformers 4 or 5."""
    params = cfg.get("rope_parameters")  # transformers 5
    if isinstance(params, dict) and "rope_theta" in params:
        theta, scaling = params["rope_theta"], params
    else:  # transformers 4 and Meta's released config.json
        theta, scaling = cfg.get("rope_theta", 10000.0), cfg.get("rope_scaling")
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type in (None, "default"):
        return float(theta), None
    if rope_type != "llama3":
        raise ConvertError(f"{source}: RoPE type {rope_type!r} is not supported (Llama 3 scaling or none)")
    return float(theta), {
        "factor": float(scaling["factor"]),
        "low_freq_factor": float(scaling["low_freq_factor"]),
        "high_freq_factor": float(scaling["high_freq_factor"]),
        "original_max_position_embeddings": int(scaling["original_max_position_embeddings"]),
    }


def read_hf_arch(hf_dir: Path) -> LlamaArch:
    """The architecture of a Hugging Face Llama folder, with every unsupported feature refused."""
    config_path = hf_dir / "config.json"
    if not hf_dir.is_dir():
        raise ConvertError(f"{hf_dir} is not a directory")
    if not config_path.is_file():
        raise ConvertError(f"{hf_dir} is not a Hugging Face checkpoint: it has no config.json")
    try:
        cfg = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ConvertError(f"{config_path} is not valid JSON: {e}") from None
    source = str(config_path)
    if cfg.get("model_type") != "llama":
        raise ConvertError(f"{hf_dir} is not a Llama checkpoint: {source} has model_type "
                           f"{cfg.get('model_type')!r}, expected 'llama'")
    for flag in ("attention_bias", "mlp_bias"):
        if cfg.get(flag):
            raise ConvertError(f"{source}: {flag}=true is not supported (Llama 3.1 has no biases)")
    if cfg.get("tie_word_embeddings", False):
        raise ConvertError(f"{source}: tie_word_embeddings=true is not supported: the benchmark's "
                           f"GPTModel has separate input and output embeddings, as Llama 3.1 8B does")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ConvertError(f"{source}: hidden_act {cfg['hidden_act']!r} is not supported (SwiGLU needs silu)")
    try:
        heads = int(cfg["num_attention_heads"])
        arch = LlamaArch(
            num_layers=int(cfg["num_hidden_layers"]),
            hidden_size=int(cfg["hidden_size"]),
            ffn_hidden_size=int(cfg["intermediate_size"]),
            num_attention_heads=heads,
            num_query_groups=int(cfg.get("num_key_value_heads") or heads),
            vocab_size=int(cfg["vocab_size"]),
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=0.0,
            max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
            init_std=float(cfg.get("initializer_range", 0.02)),
        )
    except KeyError as e:
        raise ConvertError(f"{source} lacks {e.args[0]!r}") from None
    arch.rope_theta, arch.rope_scaling = _hf_rope(cfg, source)
    if cfg.get("head_dim") not in (None, arch.head_dim):
        raise ConvertError(f"{source}: head_dim {cfg['head_dim']} differs from hidden_size / "
                           f"num_attention_heads = {arch.head_dim}, which this converter assumes")
    arch.validate(source)
    generation = hf_dir / "generation_config.json"
    if generation.is_file():
        arch.generation_config = json.loads(generation.read_text())
    else:
        arch.generation_config = {k: cfg[k] for k in ("bos_token_id", "eos_token_id") if k in cfg}
    return arch


def hf_config_dict(arch: LlamaArch, dtype: torch.dtype) -> dict:
    """config.json for LlamaForCausalLM, in the layout of Meta's releases (rope_theta and
    rope_scaling at the top level), which transformers 4 reads as is and transformers 5 converts."""
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": arch.hidden_size,
        "intermediate_size": arch.ffn_hidden_size,
        "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_attention_heads,
        "num_key_value_heads": arch.num_query_groups,
        "head_dim": arch.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": arch.norm_eps,
        "vocab_size": arch.vocab_size,
        "max_position_embeddings": arch.max_position_embeddings,
        "rope_theta": arch.rope_theta,
        "rope_scaling": None if arch.rope_scaling is None else {"rope_type": "llama3", **arch.rope_scaling},
        "tie_word_embeddings": False,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "initializer_range": arch.init_std,
        "use_cache": True,
        "torch_dtype": _DTYPE_NAMES[dtype],
    }
    for k in ("bos_token_id", "eos_token_id"):
        if k in arch.generation_config:
            cfg[k] = arch.generation_config[k]
    return cfg


def nemo_model_yaml(arch: LlamaArch, dtype: torch.dtype) -> dict:
    """context/model.yaml: the LlamaModel and its config with NeMo's class and field names."""
    scaled = arch.rope_scaling is not None
    config: dict[str, Any] = {
        "_target_": "nemo.collections.llm.gpt.model.llama." + ("Llama31Config" if scaled else "Llama3Config"),
        "num_layers": arch.num_layers,
        "hidden_size": arch.hidden_size,
        "ffn_hidden_size": arch.ffn_hidden_size,
        "num_attention_heads": arch.num_attention_heads,
        "num_query_groups": arch.num_query_groups,
        "kv_channels": arch.head_dim,
        "layernorm_epsilon": arch.norm_eps,
        "rotary_base": arch.rope_theta,
        "seq_length": arch.max_position_embeddings,
        "vocab_size": arch.vocab_size,
        "init_method_std": arch.init_std,
        "normalization": "RMSNorm",
        "gated_linear_unit": True,
        "activation_func": {"_target_": "torch.nn.functional.silu", "_call_": False},
        "position_embedding_type": "rope",
        "add_bias_linear": False,
        "share_embeddings_and_output_weights": False,
        "bf16": dtype == torch.bfloat16,
        "fp16": dtype == torch.float16,
        "params_dtype": {"_target_": f"torch.{_DTYPE_NAMES[dtype]}", "_call_": False},
    }
    if scaled:
        config.update({
            "scale_factor": arch.rope_scaling["factor"],
            "low_freq_factor": arch.rope_scaling["low_freq_factor"],
            "high_freq_factor": arch.rope_scaling["high_freq_factor"],
            "old_context_len": arch.rope_scaling["original_max_position_embeddings"],
        })
    if arch.generation_config:
        config["generation_config"] = arch.generation_config
    return {"_target_": "nemo.collections.llm.gpt.model.llama.LlamaModel", "config": config}


def read_nemo_arch(nemo_dir: Path, meta: dict[str, Any], prefix: str) -> LlamaArch:
    """The architecture from context/model.yaml (ours or NeMo's), checked against the weights."""
    yaml_path = nemo_dir / CONTEXT_DIR / "model.yaml"
    if not yaml_path.is_file():
        raise ConvertError(f"{nemo_dir} has no {CONTEXT_DIR}/model.yaml: the attention head counts of "
                           f"the checkpoint cannot be known without it")
    doc = yaml.safe_load(yaml_path.read_text()) or {}
    cfg = doc.get("config", doc)
    source = str(yaml_path)
    try:
        heads = int(cfg["num_attention_heads"])
        scaled = "Llama31Config" in str(cfg.get("_target_", "")) or "scale_factor" in cfg
        arch = LlamaArch(
            num_layers=int(cfg["num_layers"]),
            hidden_size=int(cfg["hidden_size"]),
            ffn_hidden_size=int(cfg["ffn_hidden_size"]),
            num_attention_heads=heads,
            num_query_groups=int(cfg.get("num_query_groups") or heads),
            vocab_size=int(meta[prefix + "embedding.word_embeddings.weight"].global_shape[0]),
            norm_eps=float(cfg.get("layernorm_epsilon", 1e-5)),
            rope_theta=float(cfg.get("rotary_base", 10000)),
            max_position_embeddings=int(cfg.get("seq_length", 8192)),
            rope_scaling={
                "factor": float(cfg.get("scale_factor", 8.0)),
                "low_freq_factor": float(cfg.get("low_freq_factor", 1.0)),
                "high_freq_factor": float(cfg.get("high_freq_factor", 4.0)),
                "original_max_position_embeddings": int(cfg.get("old_context_len", 8192)),
            } if scaled else None,
            init_std=float(cfg.get("init_method_std", 0.02)),
        )
    except KeyError as e:
        raise ConvertError(f"{source} lacks {e.args[0]!r}") from None
    if cfg.get("kv_channels") not in (None, arch.head_dim):
        raise ConvertError(f"{source}: kv_channels {cfg['kv_channels']} differs from hidden_size / "
                           f"num_attention_heads = {arch.head_dim}, which this converter assumes")
    if cfg.get("share_embeddings_and_output_weights"):
        raise ConvertError(f"{source}: tied input/output embeddings are not supported")
    generation = cfg.get("generation_config")
    arch.generation_config = generation if isinstance(generation, dict) else {}
    arch.validate(source)
    return arch


# ----------------------------------------------------------------------------------------------
# Safetensors, read and written with plain file I/O (no memory maps, so RSS is what we hold)

_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
                torch.float64: "float64"}


@dataclass
class _TensorInfo:
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int  # absolute byte offset of the data in the file
    nbytes: int


def _read_safetensors_header(path: Path) -> dict[str, _TensorInfo]:
    fix = "download or export this file again"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            # Checked before reading: garbage bytes give a length of exabytes (an OverflowError).
            if header_len > size - 8:
                raise ConvertError(f"{path} is truncated or not a safetensors file: its header claims "
                                   f"{header_len:,} bytes but the file holds {size:,}; {fix}")
            header = json.loads(f.read(header_len))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConvertError(f"{path} is not a readable safetensors file: {e}; {fix}") from None
    if not isinstance(header, dict):
        raise ConvertError(f"{path} is not a safetensors file: its header is not a JSON object; {fix}")
    infos = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name = entry["dtype"]
            start, end = (int(x) for x in entry["data_offsets"])
            shape = tuple(int(x) for x in entry["shape"])
        except (KeyError, TypeError, ValueError):
            raise ConvertError(f"{path}: the header entry of tensor {name} is malformed; {fix}") from None
        if dtype_name not in _ST_DTYPES:
            raise ConvertError(f"{path}: tensor {name} has unsupported dtype {dtype_name}")
        if not 0 <= start <= end or 8 + header_len + end > size:
            raise ConvertError(f"{path} is truncated: tensor {name} ends at byte {8 + header_len + end:,} "
                               f"of a {size:,}-byte file; {fix}")
        infos[name] = _TensorInfo(path, _ST_DTYPES[dtype_name], shape, 8 + header_len + start, end - start)
    return infos


class HFWeights:
    """The tensors of a Hugging Face folder: one model.safetensors, or shards listed by an index."""

    def __init__(self, hf_dir: Path):
        index = hf_dir / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            files = sorted(set(weight_map.values()))
            missing = [name for name in files if not (hf_dir / name).is_file()]
            if missing:
                raise ConvertError(f"{hf_dir}: shard(s) {', '.join(missing)} listed in {index.name} are missing")
        elif (hf_dir / "model.safetensors").is_file():
            files = ["model.safetensors"]
        else:
            extra = " (PyTorch .bin weights are not read: re-save them with safe_serialization=True)" if (
                any(hf_dir.glob("*.bin"))) else ""
            raise ConvertError(f"{hf_dir} has no model.safetensors or model.safetensors.index.json{extra}")
        self.infos: dict[str, _TensorInfo] = {}
        self.on_read: Callable[[int], None] = lambda n: None  # told of every tensor read (progress)
        for name in files:
            self.infos.update(_read_safetensors_header(hf_dir / name))

    def check(self, arch: LlamaArch, source: str) -> torch.dtype:
        """Every tensor the config implies is present with the config's shape; returns the dtype."""
        expected = arch.hf_shapes()
        for name, shape in expected.items():
            info = self.infos.get(name)
            if info is None:
                raise ConvertError(f"{source}: tensor {name} is missing from the safetensors files")
            if info.shape != shape:
                raise ConvertError(f"{source}: tensor {name} has shape {list(info.shape)} but config.json "
                                   f"implies {list(shape)}: the config does not describe these weights")
        # Old exports carry RoPE's inv_freq buffers; they are recomputed from the config.
        unexpected = [n for n in self.infos if n not in expected and not n.endswith("rotary_emb.inv_freq")]
        if unexpected:
            raise ConvertError(f"{source}: tensors not in a {arch.num_layers}-layer Llama: "
                               f"{', '.join(sorted(unexpected)[:5])}")
        dtypes = {self.infos[n].dtype for n in expected}
        if len(dtypes) != 1:
            raise ConvertError(f"{source}: tensors mix dtypes {sorted(map(str, dtypes))}; expected one")
        return dtypes.pop()

    def get(self, name: str) -> torch.Tensor:
        info = self.infos[name]
        out = torch.empty(info.shape, dtype=info.dtype)
        with open(info.file, "rb") as f:
            f.seek(info.offset)
            view = memoryview(out.reshape(-1).view(torch.uint8).numpy())
            if f.readinto(view) != info.nbytes:
                raise ConvertError(f"{info.file} is truncated: tensor {name} is incomplete")
        self.on_read(1)
        return out


def _write_safetensors(path: Path, tensors: list[tuple[str, tuple[int, ...], torch.dtype]],
                       produce: Callable[[str], torch.Tensor],
                       on_tensor: Callable[[int], None] = lambda n: None) -> None:
    """Write a safetensors file whose header is known in advance; tensors are produced one by one."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, dtype in tensors:
        nbytes = torch.Size(shape).numel() * dtype.itemsize
        header[name] = {"dtype": _ST_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, dtype in tensors:
            t = produce(name).contiguous()
            if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                raise ConvertError(f"internal: {name} produced {tuple(t.shape)} {t.dtype}, planned {shape} {dtype}")
            f.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
            on_tensor(1)


# ----------------------------------------------------------------------------------------------
# Megatron-Core dist-checkpointing in a plain (CPU, single) process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def process_group(*, single: bool) -> Iterator[None]:
    """Megatron-Core's dist-checkpointing needs torch.distributed: use the caller's group if there is
    one, else make a one-process gloo group for the duration. `single` refuses a multi-process group
    (a conversion writes its checkpoint from one process)."""
    if torch.distributed.is_initialized():
        if single and torch.distributed.get_world_size() != 1:
            raise ConvertError("the converter writes a checkpoint from one process; run it on its own "
                               "(python -m utils.convert), not inside a multi-process job")
        yield
        return
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    with mock.patch.dict(os.environ, env):
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def dist_checkpoint_shims() -> None:
    """Let Megatron-Core 0.16's torch_dist writer run in a CPU-only process (benchmark/compat.py)."""
    if not torch.cuda.is_available():
        from benchmark.compat import apply_cpu_shims

        apply_cpu_shims()


def peak_rss_gib() -> float:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ----------------------------------------------------------------------------------------------
# Destinations: written under a temporary name, renamed into place when complete


@contextlib.contextmanager
def staged_output(dst: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `dst`; rename it to `dst` on success, delete it on failure."""
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ConvertError(f"destination {dst} already exists and is not empty: choose a new folder "
                           f"or remove it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    # A killed conversion leaves its whole staging folder (the size of the model): clear those of
    # dead runs before staging this one.
    remove_stale_tmp(dst.parent, dst.name)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        yield tmp
        if dst.exists():
            dst.rmdir()  # empty, checked above
        os.rename(tmp, dst)
    except BaseException as e:
        # Looked at before the staging folder is removed, which frees the space again.
        full = not isinstance(e, (OSError, KeyboardInterrupt)) and disk_full(dst.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise with_path(e, dst, tmp) from None  # name the destination, not the staging folder
        if full:
            raise full_disk_error(dst) from e
        raise


def _copy_tokenizer(src: Path, dst: Path) -> list[str]:
    names = [n for n in TOKENIZER_FILES if (src / n).is_file()]
    if names:
        dst.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(src / name, dst / name)
    return names


# ----------------------------------------------------------------------------------------------
# HF -> NeMo


def _hf_layer_to_nemo(hf: HFWeights, i: int, shape: LlamaShape) -> dict[str, torch.Tensor]:
    p = f"model.layers.{i}."
    q, k, v = (hf.get(p + f"self_attn.{n}_proj.weight") for n in "qkv")
    qkv = fuse_qkv(q, k, v, shape)
    del q, k, v
    fc1 = torch.cat([hf.get(p + "mlp.gate_proj.weight"), hf.get(p + "mlp.up_proj.weight")], dim=0)
    return {
        "self_attention.linear_qkv.layer_norm_weight": hf.get(p + "input_layernorm.weight"),
        "self_attention.linear_qkv.weight": qkv,
        "self_attention.linear_proj.weight": hf.get(p + "self_attn.o_proj.weight"),
        "mlp.linear_fc1.layer_norm_weight": hf.get(p + "post_attention_layernorm.weight"),
        "mlp.linear_fc1.weight": fc1,
        "mlp.linear_fc2.weight": hf.get(p + "mlp.down_proj.weight"),
    }


def _nemo_sharded_state_dict(arch: LlamaArch, layers: Iterator[tuple[int, dict[str, torch.Tensor]]],
                             embedding: torch.Tensor, final_norm: torch.Tensor, output: torch.Tensor) -> dict:
    """The sharded state dict NeMo saves for a Llama, built from whole (unsharded) tensors."""
    from megatron.core.dist_checkpointing import ShardedObject, ShardedTensor

    n = arch.num_layers
    sd: dict[str, Any] = {
        PREFIX + "embedding.word_embeddings.weight": ShardedTensor.from_rank_offsets(
            PREFIX + "embedding.word_embeddings.weight", embedding, replica_id=0),
    }
    for i, tensors in layers:
        for name, tensor in tensors.items():
            key = f"{PREFIX}decoder.layers.{name}"
            # One global [num_layers, ...] tensor per name; this layer is slice i of axis 0.
            sd[f"{PREFIX}decoder.layers.{i}.{name}"] = ShardedTensor.from_rank_offsets(
                key, tensor, (0, i, n), replica_id=0, prepend_axis_num=1)
        for module in LAYER_EXTRA_STATES:
            key = f"{PREFIX}decoder.layers.{module}._extra_state"
            # TransformerEngine's extra state with FP8 off: an empty byte tensor.
            sd[f"{PREFIX}decoder.layers.{i}.{module}._extra_state"] = ShardedObject(
                key, torch.empty(0, dtype=torch.uint8), (n,), (i,), replica_id=0)
    sd[PREFIX + "decoder.final_layernorm.weight"] = ShardedTensor.from_rank_offsets(
        PREFIX + "decoder.final_layernorm.weight", final_norm, replica_id=0)
    sd[PREFIX + "output_layer.weight"] = ShardedTensor.from_rank_offsets(
        PREFIX + "output_layer.weight", output, replica_id=0)
    # GPTModel drops the output layer's (empty) extra state from its checkpoints, so none is written.
    return sd


def save_nemo_weights(weights_dir: Path, sharded: dict, step: int = 0) -> None:
    """Write a torch_dist checkpoint laid out as NeMo's MegatronStrategy.save_checkpoint does."""
    from megatron.core import dist_checkpointing

    checkpoint = {"sharded_state_dict": sharded, "state_dict": {}, "global_step": step, "epoch": 0}
    dist_checkpoint_shims()
    with process_group(single=True):
        dist_checkpointing.save(checkpoint, str(weights_dir), content_metadata={})


def hf_to_nemo(src: str | os.PathLike, dst: str | os.PathLike, log: Callable[[str], None] = print,
               progress: bool = False) -> dict:
    """Convert a Hugging Face Llama folder into a NeMo 2 checkpoint folder; returns a summary.
    `progress`: a bar on stderr over the tensors read (the torch_dist save that follows has none)."""
    start = time.perf_counter()
    src, dst = Path(src), Path(dst)
    arch = read_hf_arch(src)
    hf = HFWeights(src)
    dtype = hf.check(arch, str(src))
    shape = arch.shape
    with staged_output(dst) as out:
        log(f"reading {src}: {arch.num_layers} layers, hidden {arch.hidden_size}, {dtype}")
        # The source tensors of one layer are freed as soon as they are fused, so the peak is the
        # converted copy plus one layer.
        with Bar(len(arch.hf_shapes()), "reading", "tensors", enabled=progress) as bar:
            hf.on_read = bar.update
            layers = [(i, _hf_layer_to_nemo(hf, i, shape)) for i in range(arch.num_layers)]
            sharded = _nemo_sharded_state_dict(
                arch, iter(layers), hf.get("model.embed_tokens.weight"), hf.get("model.norm.weight"),
                hf.get("lm_head.weight"))
        del layers
        (out / WEIGHTS_DIR).mkdir()
        log(f"writing {dst / WEIGHTS_DIR} (torch_dist)")
        save_nemo_weights(out / WEIGHTS_DIR, sharded)
        del sharded
        context = out / CONTEXT_DIR
        context.mkdir()
        (context / "model.yaml").write_text(yaml.safe_dump(nemo_model_yaml(arch, dtype), sort_keys=False))
        copied = _copy_tokenizer(src, context / TOKENIZER_DIR)
    summary = {"direction": "hf-to-nemo", "src": str(src), "dst": str(dst), "tokenizer_files": copied,
               "wall_s": round(time.perf_counter() - start, 2), "peak_rss_gib": round(peak_rss_gib(), 3)}
    log(f"wrote {dst}: {summary['wall_s']} s, peak RSS {summary['peak_rss_gib']} GiB")
    return summary


# ----------------------------------------------------------------------------------------------
# NeMo -> HF


def weights_dir_of(nemo_dir: Path) -> Path:
    """The torch_dist folder of a NeMo 2 checkpoint (NEMO_DIR/weights, or that folder itself)."""
    nemo_dir = Path(nemo_dir)
    for candidate in (nemo_dir / WEIGHTS_DIR, nemo_dir):
        if (candidate / "metadata.json").is_file():
            config = json.loads((candidate / "metadata.json").read_text())
            if config.get("sharded_backend") != "torch_dist":
                raise ConvertError(f"{candidate} is a {config.get('sharded_backend')!r} checkpoint; "
                                   f"only torch_dist (NeMo 2's default) is read")
            return candidate
    raise ConvertError(f"{nemo_dir} is not a NeMo 2 checkpoint: no {WEIGHTS_DIR}/metadata.json")


class NemoWeights:
    """Reads the weights of a NeMo 2 / Megatron-Core torch_dist checkpoint one tensor at a time.

    Handles both layer layouts Megatron-Core writes: one stacked tensor per name
    (`decoder.layers.X`, NeMo's default) and one tensor per layer (`decoder.layers.<i>.X`, written
    when layers are saved as non-homogeneous). The key prefix (`module.` for NeMo, none for
    Megatron-LM) is read from the checkpoint.
    """

    def __init__(self, nemo_dir: Path):
        from megatron.core import dist_checkpointing

        self.dir = weights_dir_of(nemo_dir)
        try:
            with process_group(single=False):
                self.meta = dist_checkpointing.load_tensors_metadata(str(self.dir))
        except ConvertError:
            raise
        except (EOFError, OSError, ValueError, RuntimeError, KeyError, ImportError, AttributeError,
                pickle.UnpicklingError) as e:
            # Megatron-Core / torch.distributed.checkpoint unpickle .metadata: a truncated or
            # damaged file surfaces as one of these, with no file name.
            raise ConvertError(f"{self.dir}: the checkpoint's metadata cannot be read "
                               f"({type(e).__name__}: {e}); the checkpoint is truncated or damaged: "
                               f"copy or save it again") from None
        embedding = [k for k in self.meta if k.endswith("embedding.word_embeddings.weight")
                     and not k.startswith("optimizer.")]
        if len(embedding) != 1:
            raise ConvertError(f"{self.dir} holds no GPT model weights (no embedding.word_embeddings.weight)")
        self.prefix = embedding[0][: -len("embedding.word_embeddings.weight")]
        self.stacked = f"{self.prefix}decoder.layers.{LAYER_TENSORS[1]}" in self.meta
        self._stack_name: str | None = None
        self._stack: torch.Tensor | None = None

    def dtype(self) -> torch.dtype:
        return self.meta[self.prefix + "embedding.word_embeddings.weight"].dtype

    def check(self, arch: LlamaArch) -> None:
        """Every tensor the config implies is present with the config's shape."""
        h = arch.hidden_size
        expected = {
            "embedding.word_embeddings.weight": (arch.vocab_size, h),
            "decoder.final_layernorm.weight": (h,),
            "output_layer.weight": (arch.vocab_size, h),
        }
        for name, shape in arch.nemo_layer_shapes().items():
            if self.stacked:
                expected[f"decoder.layers.{name}"] = (arch.num_layers, *shape)
            else:
                expected.update({f"decoder.layers.{i}.{name}": shape for i in range(arch.num_layers)})
        for name, shape in expected.items():
            meta = self.meta.get(self.prefix + name)
            if meta is None:
                raise ConvertError(f"{self.dir}: tensor {self.prefix + name} is missing")
            if tuple(meta.global_shape) != shape:
                raise ConvertError(f"{self.dir}: tensor {self.prefix + name} has shape {list(meta.global_shape)} "
                                   f"but the model config implies {list(shape)}")

    def load(self, key: str) -> torch.Tensor:
        """One whole tensor (key without the prefix).

        Reading a single layer's slice of a stacked tensor is not possible in a one-process group
        (torch's ShardedTensor would place the other slices on this rank too), so a stacked name is
        read whole: the largest, linear_fc1, is under half of the model.
        """
        from megatron.core import dist_checkpointing
        from megatron.core.dist_checkpointing import ShardedTensor

        meta = self.meta[self.prefix + key]
        local = torch.empty(tuple(meta.global_shape), dtype=meta.dtype)
        request = {"t": ShardedTensor.from_rank_offsets(self.prefix + key, local, replica_id=0)}
        with process_group(single=False):
            return dist_checkpointing.load(request, str(self.dir))["t"]

    def layer_tensor(self, name: str, i: int) -> torch.Tensor:
        """Layer i of the per-layer tensor `name` (e.g. "mlp.linear_fc1.weight"), for either layout.
        The last stacked tensor read is kept, so reading a name layer after layer reads it once."""
        if not self.stacked:
            return self.load(f"decoder.layers.{i}.{name}")
        if self._stack_name != name:
            self._stack = None  # free the previous stack before reading the next
            self._stack = self.load(f"decoder.layers.{name}")
            self._stack_name = name
        return self._stack[i]

    def step(self) -> int:
        from megatron.core import dist_checkpointing

        common = dist_checkpointing.load_common_state_dict(str(self.dir))
        return int(common.get("global_step", 0)) if isinstance(common, dict) else 0


# Hugging Face per-layer tensor -> (NeMo per-layer tensor, how to get it from that tensor).
def _from_qkv(part: int) -> Callable[[torch.Tensor, LlamaShape], torch.Tensor]:
    return lambda t, shape: split_qkv(t, shape)[part]


def _from_fc1(part: int) -> Callable[[torch.Tensor, LlamaShape], torch.Tensor]:
    return lambda t, shape: t.chunk(2, dim=0)[part]


def _same(t: torch.Tensor, shape: LlamaShape) -> torch.Tensor:
    return t


HF_FROM_NEMO_LAYER = {
    "input_layernorm.weight": ("self_attention.linear_qkv.layer_norm_weight", _same),
    "self_attn.q_proj.weight": ("self_attention.linear_qkv.weight", _from_qkv(0)),
    "self_attn.k_proj.weight": ("self_attention.linear_qkv.weight", _from_qkv(1)),
    "self_attn.v_proj.weight": ("self_attention.linear_qkv.weight", _from_qkv(2)),
    "self_attn.o_proj.weight": ("self_attention.linear_proj.weight", _same),
    "post_attention_layernorm.weight": ("mlp.linear_fc1.layer_norm_weight", _same),
    "mlp.gate_proj.weight": ("mlp.linear_fc1.weight", _from_fc1(0)),
    "mlp.up_proj.weight": ("mlp.linear_fc1.weight", _from_fc1(1)),
    "mlp.down_proj.weight": ("mlp.linear_fc2.weight", _same),
}
HF_FROM_NEMO_SINGLE = {
    "model.embed_tokens.weight": "embedding.word_embeddings.weight",
    "model.norm.weight": "decoder.final_layernorm.weight",
    "lm_head.weight": "output_layer.weight",
}


def _plan_shards(names: list[str], nbytes: dict[str, int], max_shard_bytes: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    size = 0
    for name in names:
        if shards[-1] and size + nbytes[name] > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes[name]
    return shards


def nemo_to_hf(src: str | os.PathLike, dst: str | os.PathLike, *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
               log: Callable[[str], None] = print, progress: bool = False) -> dict:
    """Convert a NeMo 2 Llama checkpoint folder into a Hugging Face folder; returns a summary.
    `progress`: a bar on stderr over the tensors written."""
    with process_group(single=False):  # one group for the many reads below
        return _nemo_to_hf(Path(src), Path(dst), max_shard_bytes, log, progress)


def _nemo_to_hf(src: Path, dst: Path, max_shard_bytes: int, log: Callable[[str], None], progress: bool) -> dict:
    start = time.perf_counter()
    if not src.is_dir():
        raise ConvertError(f"{src} is not a directory")
    nemo = NemoWeights(src)
    arch = read_nemo_arch(src, nemo.meta, nemo.prefix)
    nemo.check(arch)
    dtype = nemo.dtype()
    shape = arch.shape
    hf_shapes = arch.hf_shapes()
    # Name-major order (all layers' q_proj, then all k_proj, ...), so each stacked NeMo tensor is
    # read once and held only while its layers are written.
    names = (["model.embed_tokens.weight"]
             + [f"model.layers.{i}.{field}" for field in HF_FROM_NEMO_LAYER for i in range(arch.num_layers)]
             + ["model.norm.weight", "lm_head.weight"])
    nbytes = {n: torch.Size(s).numel() * dtype.itemsize for n, s in hf_shapes.items()}
    shards = _plan_shards(names, nbytes, max_shard_bytes)
    files = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))])

    def produce(name: str) -> torch.Tensor:
        if name in HF_FROM_NEMO_SINGLE:
            return nemo.load(HF_FROM_NEMO_SINGLE[name]).to(dtype)
        _, _, i, field_name = name.split(".", 3)
        nemo_name, extract = HF_FROM_NEMO_LAYER[field_name]
        return extract(nemo.layer_tensor(nemo_name, int(i)), shape).to(dtype)

    with staged_output(dst) as out:
        log(f"reading {nemo.dir}: {arch.num_layers} layers, hidden {arch.hidden_size}, {dtype}")
        with Bar(len(names), "writing", "tensors", enabled=progress) as bar:
            for file, shard in zip(files, shards, strict=True):
                _write_safetensors(out / file, [(n, hf_shapes[n], dtype) for n in shard], produce, bar.update)
        if len(files) > 1:
            index = {"metadata": {"total_size": sum(nbytes.values())},
                     "weight_map": {n: f for f, shard in zip(files, shards, strict=True) for n in shard}}
            (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        (out / "config.json").write_text(json.dumps(hf_config_dict(arch, dtype), indent=2) + "\n")
        if arch.generation_config:
            (out / "generation_config.json").write_text(json.dumps(arch.generation_config, indent=2) + "\n")
        copied = _copy_tokenizer(src / CONTEXT_DIR / TOKENIZER_DIR, out)
    summary = {"direction": "nemo-to-hf", "src": str(src), "dst": str(dst), "files": files,
               "tokenizer_files": copied, "step": nemo.step(),
               "wall_s": round(time.perf_counter() - start, 2), "peak_rss_gib": round(peak_rss_gib(), 3)}
    log(f"wrote {dst}: {summary['wall_s']} s, peak RSS {summary['peak_rss_gib']} GiB")
    return summary


# ----------------------------------------------------------------------------------------------
# Loading into the benchmark's GPTModel (the training harness's entry points)


def _model_requests(model: torch.nn.Module) -> dict[str, Any]:
    """The model's sharded state dict (TP/PP-aware; keys already in the TransformerEngine naming that
    NeMo saves, through the local spec's sharded_state_dict_keys_map), without extra-state objects."""
    from megatron.core.dist_checkpointing import ShardedObject

    if not hasattr(model, "sharded_state_dict"):
        raise TypeError(f"expected the Megatron-Core GPTModel from benchmark.model.build_model, "
                        f"got {type(model).__name__}")
    return {k: v for k, v in model.sharded_state_dict(prefix="").items()
            if not isinstance(v, ShardedObject) and not k.endswith("_extra_state")}


def _global_shape(entry: Any) -> tuple[int, ...]:
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensorFactory

    if isinstance(entry, ShardedTensorFactory):  # SwiGLU's fc1: two halves of one global tensor
        entry = next(iter(nested_values({"built": entry.build()})))
    return tuple(entry.global_shape)


def _finish_load(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise ConvertError(f"checkpoint and model disagree: missing {missing[:5]}, unexpected {unexpected[:5]}")


def load_nemo_weights_into(model: torch.nn.Module, nemo_dir: str | os.PathLike) -> int:
    """Load a NeMo 2 checkpoint's weights into `model`; returns the checkpoint's training step.

    `model` is the (unwrapped) GPTModel from ``benchmark.model.build_model``, on any device and in
    any dtype, under an initialized Megatron-Core parallel state; every rank calls this. Each rank
    reads only its own tensor- and pipeline-parallel slices. The step is ``global_step`` of the
    checkpoint's common state: 0 for a converted Hugging Face model. Raises :class:`ConvertError`
    naming the tensor when the checkpoint lacks a tensor or its shape differs from the model's.
    """
    from megatron.core import dist_checkpointing

    nemo = NemoWeights(Path(nemo_dir))
    requests = _model_requests(model)
    for name, entry in requests.items():
        if not nemo.stacked and ".layers." in entry.key:
            raise ConvertError(f"{nemo.dir} stores one tensor per layer; load_nemo_weights_into reads "
                               f"the stacked layout NeMo writes by default (convert it with nemo-to-hf "
                               f"and back)")
        key = nemo.prefix + entry.key
        meta = nemo.meta.get(key)
        if meta is None:
            raise ConvertError(f"{nemo.dir}: tensor {key} (model parameter {name}) is missing from the checkpoint")
        if tuple(meta.global_shape) != _global_shape(entry):
            raise ConvertError(f"{nemo.dir}: tensor {key} has shape {list(meta.global_shape)} but the model's "
                               f"{name} needs {list(_global_shape(entry))}: the checkpoint's architecture "
                               f"(or vocabulary padding) differs from the run's configuration")
        entry.key = key
    with process_group(single=False):
        loaded = dist_checkpointing.load(requests, str(nemo.dir))
    # The result also holds the checkpoint's common state (global_step, ...); keep the weights.
    _finish_load(model, {k: loaded[k] for k in requests})
    return nemo.step()


def load_hf_weights_into(model: torch.nn.Module, hf_dir: str | os.PathLike) -> int:
    """Load a Hugging Face Llama folder's weights straight into `model`; returns 0 (the step).

    Same contract as :func:`load_nemo_weights_into`: every rank calls it and fills its own slices.
    Each needed source tensor is read once per rank and converted on the fly (q/k/v interleaved,
    gate/up stacked), so no NeMo copy is written; host memory peaks at one layer.
    """
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensorFactory

    hf_dir = Path(hf_dir)
    arch = read_hf_arch(hf_dir)
    hf = HFWeights(hf_dir)
    hf.check(arch, str(hf_dir))
    shape = arch.shape
    singles = {"embedding.word_embeddings.weight": "model.embed_tokens.weight",
               "decoder.final_layernorm.weight": "model.norm.weight", "output_layer.weight": "lm_head.weight"}
    cache: dict[str, Any] = {"layer": None, "tensors": {}}

    def full(key: str, layer: int | None) -> torch.Tensor:
        if layer is None:
            return hf.get(singles[key])
        if cache["layer"] != layer:
            cache["tensors"] = {}
            cache["tensors"] = _hf_layer_to_nemo(hf, layer, shape)
            cache["layer"] = layer
        return cache["tensors"][key[len("decoder.layers."):]]

    requests = _model_requests(model)
    expected = {k: (arch.num_layers, *s) for k, s in
                ((f"decoder.layers.{n}", s) for n, s in arch.nemo_layer_shapes().items())}
    expected.update({"embedding.word_embeddings.weight": (arch.vocab_size, arch.hidden_size),
                     "decoder.final_layernorm.weight": (arch.hidden_size,),
                     "output_layer.weight": (arch.vocab_size, arch.hidden_size)})
    shards = []
    for name, entry in requests.items():
        if entry.key not in expected:
            raise ConvertError(f"model parameter {name} ({entry.key}) has no counterpart in a Llama checkpoint")
        if _global_shape(entry) != expected[entry.key]:
            raise ConvertError(f"{hf_dir}: tensor {entry.key} has shape {list(expected[entry.key])} in the "
                               f"checkpoint but the model's {name} needs {list(_global_shape(entry))}: the "
                               f"checkpoint's architecture (or vocabulary padding) differs from the run's")
        built = entry.build() if isinstance(entry, ShardedTensorFactory) else entry
        shards.extend(nested_values({"built": built}))
    # Layer by layer, so each layer's source tensors are read and converted once.
    shards.sort(key=lambda sh: sh.global_offset[0] if sh.prepend_axis_num else -1)
    with torch.no_grad():
        for sh in shards:
            layer = sh.global_offset[0] if sh.prepend_axis_num else None
            src = full(sh.key, layer)
            offsets = sh.global_offset[sh.prepend_axis_num:]
            index = tuple(slice(o, o + n) for o, n in zip(offsets, sh.local_shape, strict=True))
            # The shard's data is the parameter itself or a view of it (SwiGLU halves), so this
            # copy lands in the model.
            sh.data.copy_(src[index])
    return 0


# ----------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m utils.convert",
        description="Convert Llama checkpoints between Hugging Face (safetensors + config.json) and "
                    "NeMo 2 (context/ + weights/ as a Megatron-Core torch_dist checkpoint). NeMo is not "
                    "needed. The destination must not exist or be empty; it appears only when complete.",
    )
    parser.add_argument("--summary", metavar="JSON", help="also write what was done (wall time, peak RSS, "
                        "files) to this JSON file")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    a = sub.add_parser("hf-to-nemo", help="Hugging Face Llama folder -> NeMo 2 checkpoint folder",
                       description="Hugging Face Llama folder -> NeMo 2 checkpoint folder (weights keep "
                                   "their dtype; tokenizer files go to context/nemo_tokenizer).")
    a.add_argument("--src", required=True, help="Hugging Face folder: config.json and *.safetensors")
    a.add_argument("--dst", required=True, help="NeMo 2 folder to create")
    add_flag(a)
    b = sub.add_parser("nemo-to-hf", help="NeMo 2 checkpoint folder -> Hugging Face Llama folder",
                       description="NeMo 2 checkpoint folder (ours or NeMo's) -> Hugging Face folder that "
                                   "transformers' LlamaForCausalLM.from_pretrained loads.")
    b.add_argument("--src", required=True, help="NeMo 2 folder: context/model.yaml and weights/")
    b.add_argument("--dst", required=True, help="Hugging Face folder to create")
    b.add_argument("--max-shard-gb", type=float, default=DEFAULT_MAX_SHARD_BYTES / 1e9,
                   help="largest safetensors file, in GB (default %(default)s)")
    add_flag(b)
    return parser


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_env()
        progress = not args.no_progress
        if args.command == "hf-to-nemo":
            summary = hf_to_nemo(args.src, args.dst, progress=progress)
        else:
            summary = nemo_to_hf(args.src, args.dst, max_shard_bytes=int(args.max_shard_gb * 1e9), progress=progress)
    except ConvertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.summary:
        write_json_atomic(args.summary, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
