"""Load Hugging Face and NeMo 2 Llama checkpoints into the benchmark's live GPTModel.

What benchmark/train.py uses for ``USE_CKPT=1 MODEL_CKPT=...``: :func:`load_hf_weights_into`
(``FROM_HF=1``) and :func:`load_nemo_weights_into` (``FROM_HF=0``), and the readers both sides of
the offline converter (utils/convert.py) share: the architecture of a Hugging Face folder, its
safetensors tensors, and the tensors of a NeMo 2 / Megatron-Core torch_dist checkpoint.

NeMo 2 weight keys are those of Megatron-Core's GPTModel under the ``module.`` prefix NeMo's wrapper
adds, named as in TransformerEngine's layer spec (benchmark/hf_mapping.py derives those names), with
per-layer tensors stacked along a leading layer axis, as TransformerBlock's sharded state dict lays
them out.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from benchmark import hf_mapping as km
from benchmark.errors import DataError
from benchmark.hf_mapping import LlamaShape

WEIGHTS_DIR = "weights"
# Per-layer tensors of the NeMo layout (names after `decoder.layers.`), in the key map's order.
LAYER_TENSORS = km.te_layer_fields()


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
            raise ConvertError(
                f"{source}: hidden size {self.hidden_size} is not divisible by "
                f"{self.num_attention_heads} attention heads"
            )
        if self.num_attention_heads % self.num_query_groups:
            raise ConvertError(
                f"{source}: {self.num_attention_heads} attention heads are not divisible by "
                f"{self.num_query_groups} key/value heads"
            )

    def hf_pattern_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each Hugging Face tensor of the key map (per-layer ones by pattern)."""
        h, f, d = self.hidden_size, self.ffn_hidden_size, self.head_dim
        q, kv = self.num_attention_heads * d, self.num_query_groups * d
        by_field = {
            "embed_tokens.weight": (self.vocab_size, h),
            "input_layernorm.weight": (h,),
            "q_proj.weight": (q, h),
            "k_proj.weight": (kv, h),
            "v_proj.weight": (kv, h),
            "o_proj.weight": (h, q),
            "post_attention_layernorm.weight": (h,),
            "gate_proj.weight": (f, h),
            "up_proj.weight": (f, h),
            "down_proj.weight": (h, f),
            "norm.weight": (h,),
            "lm_head.weight": (self.vocab_size, h),
        }
        # The last two dotted parts name a tensor unambiguously in a Llama.
        return {hf: by_field[".".join(hf.split(".")[-2:])] for hf, _, _ in km.KEY_MAP}

    def hf_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor of the LlamaForCausalLM state dict, with its shape."""
        return {
            name: shape for hf, shape in self.hf_pattern_shapes().items() for name in km.expand(hf, self.num_layers)
        }

    def megatron_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each Megatron tensor of the key map (local-spec names, per-layer ones by pattern): a fused
        one stacks its parts along dim 0."""
        hf = self.hf_pattern_shapes()
        out = {}
        for mg, (_, names) in km.megatron_sources().items():
            first = hf[names[0]]
            out[mg] = (sum(hf[n][0] for n in names), *first[1:])
        return out

    def nemo_layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """One layer's tensors in the NeMo layout (without the leading layer axis)."""
        return {
            km.layer_field(km.te_name(mg), km.MEGATRON_LAYER_PREFIX): shape
            for mg, shape in self.megatron_shapes().items()
            if km.is_layer_name(mg)
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
        raise ConvertError(
            f"{hf_dir} is not a Llama checkpoint: {source} has model_type {cfg.get('model_type')!r}, expected 'llama'"
        )
    for flag in ("attention_bias", "mlp_bias"):
        if cfg.get(flag):
            raise ConvertError(f"{source}: {flag}=true is not supported (Llama 3.1 has no biases)")
    if cfg.get("tie_word_embeddings", False):
        raise ConvertError(
            f"{source}: tie_word_embeddings=true is not supported: the benchmark's "
            f"GPTModel has separate input and output embeddings, as Llama 3.1 8B does"
        )
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
        raise ConvertError(
            f"{source}: head_dim {cfg['head_dim']} differs from hidden_size / "
            f"num_attention_heads = {arch.head_dim}, which this converter assumes"
        )
    arch.validate(source)
    generation = hf_dir / "generation_config.json"
    if generation.is_file():
        arch.generation_config = json.loads(generation.read_text())
    else:
        arch.generation_config = {k: cfg[k] for k in ("bos_token_id", "eos_token_id") if k in cfg}
    return arch


# ----------------------------------------------------------------------------------------------
# Safetensors, read through safetensors.safe_open

# safetensors' dtype names; utils/convert.py's writer uses the same table.
ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_DAMAGED_FIX = "download or export this file again"


@dataclass
class _TensorInfo:
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]


def _read_safetensors_header(path: Path) -> dict[str, _TensorInfo]:
    from safetensors import SafetensorError, safe_open

    try:
        # safe_open checks the header: its length, its JSON, and that the tensors' offsets cover
        # the file exactly (so a truncated file is refused here, before any tensor is read).
        with safe_open(str(path), framework="pt") as f:
            slices = {name: f.get_slice(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
            found = {name: (sl.get_dtype(), tuple(sl.get_shape())) for name, sl in slices.items()}
    except (OSError, SafetensorError) as e:
        raise ConvertError(f"{path} is not a readable safetensors file: {e}; {_DAMAGED_FIX}") from None
    infos = {}
    for name, (dtype_name, shape) in found.items():
        if dtype_name not in ST_DTYPES:
            raise ConvertError(f"{path}: tensor {name} has unsupported dtype {dtype_name}")
        infos[name] = _TensorInfo(path, ST_DTYPES[dtype_name], shape)
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
            extra = (
                " (PyTorch .bin weights are not read: re-save them with safe_serialization=True)"
                if (any(hf_dir.glob("*.bin")))
                else ""
            )
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
                raise ConvertError(
                    f"{source}: tensor {name} has shape {list(info.shape)} but config.json "
                    f"implies {list(shape)}: the config does not describe these weights"
                )
        # Old exports carry RoPE's inv_freq buffers; they are recomputed from the config.
        unexpected = [n for n in self.infos if n not in expected and not n.endswith("rotary_emb.inv_freq")]
        if unexpected:
            raise ConvertError(
                f"{source}: tensors not in a {arch.num_layers}-layer Llama: {', '.join(sorted(unexpected)[:5])}"
            )
        dtypes = {self.infos[n].dtype for n in expected}
        if len(dtypes) != 1:
            raise ConvertError(f"{source}: tensors mix dtypes {sorted(map(str, dtypes))}; expected one")
        return dtypes.pop()

    def get(self, name: str) -> torch.Tensor:
        """One tensor. safetensors hands it back as a private (copy-on-write) map of the file's
        bytes: once read its pages count in resident memory as a copy would, and go with the tensor."""
        from safetensors import SafetensorError, safe_open

        info = self.infos[name]
        try:
            with safe_open(str(info.file), framework="pt") as f:
                tensor = f.get_tensor(name)
        except (OSError, SafetensorError) as e:
            raise ConvertError(f"{info.file}: tensor {name} cannot be read ({e}); {_DAMAGED_FIX}") from None
        self.on_read(1)
        return tensor


def hf_layer_to_nemo(hf: HFWeights, i: int, shape: LlamaShape) -> dict[str, torch.Tensor]:
    """Layer i's tensors in the NeMo naming (after ``decoder.layers.``), fused from the Hugging Face
    ones; the source tensors of each fused tensor are dropped as soon as it is made."""
    return {
        km.layer_field(km.te_name(mg), km.MEGATRON_LAYER_PREFIX): km.to_megatron(hf.get, mg, shape, i)
        for mg in km.megatron_sources()
        if km.is_layer_name(mg)
    }


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
            raise ConvertError(
                "the converter writes a checkpoint from one process; run it on its own "
                "(python -m utils.convert), not inside a multi-process job"
            )
        yield
        return
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    with mock.patch.dict(os.environ, env):
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------------------------
# NeMo -> HF


def weights_dir_of(nemo_dir: Path) -> Path:
    """The torch_dist folder of a NeMo 2 checkpoint (NEMO_DIR/weights, or that folder itself)."""
    nemo_dir = Path(nemo_dir)
    for candidate in (nemo_dir / WEIGHTS_DIR, nemo_dir):
        if (candidate / "metadata.json").is_file():
            config = json.loads((candidate / "metadata.json").read_text())
            if config.get("sharded_backend") != "torch_dist":
                raise ConvertError(
                    f"{candidate} is a {config.get('sharded_backend')!r} checkpoint; "
                    f"only torch_dist (NeMo 2's default) is read"
                )
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
        except (
            EOFError,
            OSError,
            ValueError,
            RuntimeError,
            KeyError,
            ImportError,
            AttributeError,
            pickle.UnpicklingError,
        ) as e:
            # Megatron-Core / torch.distributed.checkpoint unpickle .metadata: a truncated or
            # damaged file surfaces as one of these, with no file name.
            raise ConvertError(
                f"{self.dir}: the checkpoint's metadata cannot be read "
                f"({type(e).__name__}: {e}); the checkpoint is truncated or damaged: "
                f"copy or save it again"
            ) from None
        embedding = [
            k for k in self.meta if k.endswith("embedding.word_embeddings.weight") and not k.startswith("optimizer.")
        ]
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
        expected = {}
        for mg, shape in arch.megatron_shapes().items():
            if not km.is_layer_name(mg):
                expected[mg] = shape
            elif self.stacked:
                expected[km.stacked(km.te_name(mg))] = (arch.num_layers, *shape)
            else:
                expected.update({km.te_name(mg).format(i=i): shape for i in range(arch.num_layers)})
        for name, shape in expected.items():
            meta = self.meta.get(self.prefix + name)
            if meta is None:
                raise ConvertError(f"{self.dir}: tensor {self.prefix + name} is missing")
            if tuple(meta.global_shape) != shape:
                raise ConvertError(
                    f"{self.dir}: tensor {self.prefix + name} has shape {list(meta.global_shape)} "
                    f"but the model config implies {list(shape)}"
                )

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
# ----------------------------------------------------------------------------------------------
# Loading into the benchmark's GPTModel (the training harness's entry points)


def _model_requests(model: torch.nn.Module) -> dict[str, Any]:
    """The model's sharded state dict (TP/PP-aware; keys already in the TransformerEngine naming that
    NeMo saves, through the local spec's sharded_state_dict_keys_map), without extra-state objects."""
    from megatron.core.dist_checkpointing import ShardedObject

    if not hasattr(model, "sharded_state_dict"):
        raise TypeError(
            f"expected the Megatron-Core GPTModel from benchmark.model.build_model, got {type(model).__name__}"
        )
    return {
        k: v
        for k, v in model.sharded_state_dict(prefix="").items()
        if not isinstance(v, ShardedObject) and not k.endswith("_extra_state")
    }


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
            raise ConvertError(
                f"{nemo.dir} stores one tensor per layer; load_nemo_weights_into reads "
                f"the stacked layout NeMo writes by default (convert it with nemo-to-hf "
                f"and back)"
            )
        key = nemo.prefix + entry.key
        meta = nemo.meta.get(key)
        if meta is None:
            raise ConvertError(f"{nemo.dir}: tensor {key} (model parameter {name}) is missing from the checkpoint")
        if tuple(meta.global_shape) != _global_shape(entry):
            raise ConvertError(
                f"{nemo.dir}: tensor {key} has shape {list(meta.global_shape)} but the model's "
                f"{name} needs {list(_global_shape(entry))}: the checkpoint's architecture "
                f"(or vocabulary padding) differs from the run's configuration"
            )
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
    cache: dict[str, Any] = {"layer": None, "tensors": {}}

    def full(key: str, layer: int | None) -> torch.Tensor:
        if layer is None:
            return km.to_megatron(hf.get, key, shape)
        if cache["layer"] != layer:
            cache["tensors"] = {}
            cache["tensors"] = hf_layer_to_nemo(hf, layer, shape)
            cache["layer"] = layer
        return cache["tensors"][key[len(km.stacked(km.MEGATRON_LAYER_PREFIX)) :]]

    requests = _model_requests(model)
    # The keys the model's sharded state dict asks for (TransformerEngine names, layers stacked).
    expected = {
        km.stacked(km.te_name(mg)) if km.is_layer_name(mg) else mg: (arch.num_layers, *s) if km.is_layer_name(mg) else s
        for mg, s in arch.megatron_shapes().items()
    }
    shards = []
    for name, entry in requests.items():
        if entry.key not in expected:
            raise ConvertError(f"model parameter {name} ({entry.key}) has no counterpart in a Llama checkpoint")
        if _global_shape(entry) != expected[entry.key]:
            raise ConvertError(
                f"{hf_dir}: tensor {entry.key} has shape {list(expected[entry.key])} in the "
                f"checkpoint but the model's {name} needs {list(_global_shape(entry))}: the "
                f"checkpoint's architecture (or vocabulary padding) differs from the run's"
            )
        built = entry.build() if isinstance(entry, ShardedTensorFactory) else entry
        shards.extend(nested_values({"built": built}))
    # Layer by layer, so each layer's source tensors are read and converted once.
    shards.sort(key=lambda sh: sh.global_offset[0] if sh.prepend_axis_num else -1)
    with torch.no_grad():
        for sh in shards:
            layer = sh.global_offset[0] if sh.prepend_axis_num else None
            src = full(sh.key, layer)
            offsets = sh.global_offset[sh.prepend_axis_num :]
            index = tuple(slice(o, o + n) for o, n in zip(offsets, sh.local_shape, strict=True))
            # The shard's data is the parameter itself or a view of it (SwiGLU halves), so this
            # copy lands in the model.
            sh.data.copy_(src[index])
    return 0
