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
(benchmark/hf_mapping.py holds the key map). TransformerEngine's modules also save an ``_extra_state`` object per
linear layer (an empty uint8 tensor when FP8 is off), which is written too so that a NeMo model built
with TransformerEngine finds every key it asks for.

Memory: HF -> NeMo holds one converted copy of the weights (torch_dist writes a checkpoint in one
call) plus one layer's source tensors; NeMo -> HF streams one tensor at a time. Safetensors are read
with safetensors.safe_open (benchmark/hf_weights.py) and written by a streaming writer here.

Loading a checkpoint into the training harness's live model is benchmark/hf_weights.py's
(``load_nemo_weights_into``, ``load_hf_weights_into``), as are the readers both use.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import struct
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmark import hf_mapping as km
from benchmark.hf_weights import (
    ST_DTYPES,
    WEIGHTS_DIR,
    ConvertError,
    HFWeights,
    LlamaArch,
    NemoWeights,
    hf_layer_to_nemo,
    process_group,
    read_hf_arch,
)
from utils.errors import command, disk_full, full_disk_error, with_path
from utils.fileio import remove_stale_tmp, write_json_atomic
from utils.progress import Bar, add_flag, check_env

PREFIX = "module."  # NeMo's MegatronParallel wraps the GPTModel as `module`
CONTEXT_DIR = "context"
TOKENIZER_DIR = "nemo_tokenizer"
# Files of a Hugging Face tokenizer folder (whichever the source has are carried along).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)
# Modules that carry an `_extra_state` object in a TransformerEngine-spec checkpoint.
LAYER_EXTRA_STATES = (
    "self_attention.linear_qkv",
    "self_attention.linear_proj",
    "mlp.linear_fc1",
    "mlp.linear_fc2",
)
# Hugging Face shards at most this large, as `save_pretrained` does by default in transformers 4.
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9


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
        config.update(
            {
                "scale_factor": arch.rope_scaling["factor"],
                "low_freq_factor": arch.rope_scaling["low_freq_factor"],
                "high_freq_factor": arch.rope_scaling["high_freq_factor"],
                "old_context_len": arch.rope_scaling["original_max_position_embeddings"],
            }
        )
    if arch.generation_config:
        config["generation_config"] = arch.generation_config
    return {"_target_": "nemo.collections.llm.gpt.model.llama.LlamaModel", "config": config}


def read_nemo_arch(nemo_dir: Path, meta: dict[str, Any], prefix: str) -> LlamaArch:
    """The architecture from context/model.yaml (ours or NeMo's), checked against the weights."""
    yaml_path = nemo_dir / CONTEXT_DIR / "model.yaml"
    if not yaml_path.is_file():
        raise ConvertError(
            f"{nemo_dir} has no {CONTEXT_DIR}/model.yaml: the attention head counts of "
            f"the checkpoint cannot be known without it"
        )
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
            }
            if scaled
            else None,
            init_std=float(cfg.get("init_method_std", 0.02)),
        )
    except KeyError as e:
        raise ConvertError(f"{source} lacks {e.args[0]!r}") from None
    if cfg.get("kv_channels") not in (None, arch.head_dim):
        raise ConvertError(
            f"{source}: kv_channels {cfg['kv_channels']} differs from hidden_size / "
            f"num_attention_heads = {arch.head_dim}, which this converter assumes"
        )
    if cfg.get("share_embeddings_and_output_weights"):
        raise ConvertError(f"{source}: tied input/output embeddings are not supported")
    generation = cfg.get("generation_config")
    arch.generation_config = generation if isinstance(generation, dict) else {}
    arch.validate(source)
    return arch


# ----------------------------------------------------------------------------------------------
# Safetensors, written

_ST_NAMES = {v: k for k, v in ST_DTYPES.items()}
_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float64: "float64",
}


def _write_safetensors(
    path: Path,
    tensors: list[tuple[str, tuple[int, ...], torch.dtype]],
    produce: Callable[[str], torch.Tensor],
    on_tensor: Callable[[int], None] = lambda n: None,
) -> None:
    """Write a safetensors file whose header is known in advance; tensors are produced one by one.

    Written here rather than with safetensors.torch.save_file, which takes every tensor of the file
    at once: producing them one at a time is what bounds NeMo -> HF to one stacked tensor."""
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


def dist_checkpoint_shims() -> None:
    """Let Megatron-Core 0.16's torch_dist writer run in a CPU-only process (benchmark/mcore_workarounds.py)."""
    if not torch.cuda.is_available():
        from benchmark.mcore_workarounds import apply_cpu_shims

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
        raise ConvertError(f"destination {dst} already exists and is not empty: choose a new folder or remove it")
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


def _nemo_sharded_state_dict(
    arch: LlamaArch, layers: list[tuple[int, dict[str, torch.Tensor]]], singles: dict[str, torch.Tensor]
) -> dict:
    """The sharded state dict NeMo saves for a Llama, built from whole (unsharded) tensors: `layers`
    from hf_layer_to_nemo, `singles` the tensors outside the layers by their Megatron names. Keys go
    in the key map's order (the embedding, the layers, the final norm, the output layer)."""
    from megatron.core.dist_checkpointing import ShardedObject, ShardedTensor

    n = arch.num_layers
    order = list(km.megatron_sources())
    first_layer = next(k for k, mg in enumerate(order) if km.is_layer_name(mg))
    sd: dict[str, Any] = {}

    def add_singles(names: list[str]) -> None:
        for mg in names:
            if not km.is_layer_name(mg):
                sd[PREFIX + mg] = ShardedTensor.from_rank_offsets(PREFIX + mg, singles[mg], replica_id=0)

    add_singles(order[:first_layer])
    for i, tensors in layers:
        for name, tensor in tensors.items():
            key = f"{PREFIX}decoder.layers.{name}"
            # One global [num_layers, ...] tensor per name; this layer is slice i of axis 0.
            sd[f"{PREFIX}decoder.layers.{i}.{name}"] = ShardedTensor.from_rank_offsets(
                key, tensor, (0, i, n), replica_id=0, prepend_axis_num=1
            )
        for module in LAYER_EXTRA_STATES:
            key = f"{PREFIX}decoder.layers.{module}._extra_state"
            # TransformerEngine's extra state with FP8 off: an empty byte tensor.
            sd[f"{PREFIX}decoder.layers.{i}.{module}._extra_state"] = ShardedObject(
                key, torch.empty(0, dtype=torch.uint8), (n,), (i,), replica_id=0
            )
    add_singles(order[first_layer:])
    # GPTModel drops the output layer's (empty) extra state from its checkpoints, so none is written.
    return sd


def save_nemo_weights(weights_dir: Path, sharded: dict, step: int = 0) -> None:
    """Write a torch_dist checkpoint laid out as NeMo's MegatronStrategy.save_checkpoint does."""
    from megatron.core import dist_checkpointing

    checkpoint = {"sharded_state_dict": sharded, "state_dict": {}, "global_step": step, "epoch": 0}
    dist_checkpoint_shims()
    with process_group(single=True):
        dist_checkpointing.save(checkpoint, str(weights_dir), content_metadata={})


def hf_to_nemo(
    src: str | os.PathLike, dst: str | os.PathLike, log: Callable[[str], None] = print, progress: bool = False
) -> dict:
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
            layers = [(i, hf_layer_to_nemo(hf, i, shape)) for i in range(arch.num_layers)]
            singles = {
                mg: km.to_megatron(hf.get, mg, shape) for mg in km.megatron_sources() if not km.is_layer_name(mg)
            }
            sharded = _nemo_sharded_state_dict(arch, layers, singles)
            del singles
        del layers
        (out / WEIGHTS_DIR).mkdir()
        log(f"writing {dst / WEIGHTS_DIR} (torch_dist)")
        save_nemo_weights(out / WEIGHTS_DIR, sharded)
        del sharded
        context = out / CONTEXT_DIR
        context.mkdir()
        (context / "model.yaml").write_text(yaml.safe_dump(nemo_model_yaml(arch, dtype), sort_keys=False))
        copied = _copy_tokenizer(src, context / TOKENIZER_DIR)
    summary = {
        "direction": "hf-to-nemo",
        "src": str(src),
        "dst": str(dst),
        "tokenizer_files": copied,
        "wall_s": round(time.perf_counter() - start, 2),
        "peak_rss_gib": round(peak_rss_gib(), 3),
    }
    log(f"wrote {dst}: {summary['wall_s']} s, peak RSS {summary['peak_rss_gib']} GiB")
    return summary


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


def nemo_to_hf(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> dict:
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
    names = [name for hf, _, _ in km.KEY_MAP for name in km.expand(hf, arch.num_layers)]
    nbytes = {n: torch.Size(s).numel() * dtype.itemsize for n, s in hf_shapes.items()}
    shards = _plan_shards(names, nbytes, max_shard_bytes)
    files = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    )

    patterns = {hf.format(i=i): (hf, i) for hf, _, _ in km.KEY_MAP for i in km.layer_numbers(hf, arch.num_layers)}

    def produce(name: str) -> torch.Tensor:
        hf, i = patterns[name]
        source = km.te_name(km.hf_sources()[hf].megatron)
        if i is None:
            return km.from_megatron(nemo.load(source), hf, shape).to(dtype)
        fused = nemo.layer_tensor(km.layer_field(source, km.MEGATRON_LAYER_PREFIX), i)
        return km.from_megatron(fused, hf, shape).to(dtype)

    with staged_output(dst) as out:
        log(f"reading {nemo.dir}: {arch.num_layers} layers, hidden {arch.hidden_size}, {dtype}")
        with Bar(len(names), "writing", "tensors", enabled=progress) as bar:
            for file, shard in zip(files, shards, strict=True):
                _write_safetensors(out / file, [(n, hf_shapes[n], dtype) for n in shard], produce, bar.update)
        if len(files) > 1:
            index = {
                "metadata": {"total_size": sum(nbytes.values())},
                "weight_map": {n: f for f, shard in zip(files, shards, strict=True) for n in shard},
            }
            (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        (out / "config.json").write_text(json.dumps(hf_config_dict(arch, dtype), indent=2) + "\n")
        if arch.generation_config:
            (out / "generation_config.json").write_text(json.dumps(arch.generation_config, indent=2) + "\n")
        copied = _copy_tokenizer(src / CONTEXT_DIR / TOKENIZER_DIR, out)
    summary = {
        "direction": "nemo-to-hf",
        "src": str(src),
        "dst": str(dst),
        "files": files,
        "tokenizer_files": copied,
        "step": nemo.step(),
        "wall_s": round(time.perf_counter() - start, 2),
        "peak_rss_gib": round(peak_rss_gib(), 3),
    }
    log(f"wrote {dst}: {summary['wall_s']} s, peak RSS {summary['peak_rss_gib']} GiB")
    return summary


# ----------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m utils.convert",
        description="Convert Llama checkpoints between Hugging Face (safetensors + config.json) and "
        "NeMo 2 (context/ + weights/ as a Megatron-Core torch_dist checkpoint). NeMo is not "
        "needed. The destination must not exist or be empty; it appears only when complete.",
    )
    parser.add_argument(
        "--summary", metavar="JSON", help="also write what was done (wall time, peak RSS, files) to this JSON file"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    a = sub.add_parser(
        "hf-to-nemo",
        help="Hugging Face Llama folder -> NeMo 2 checkpoint folder",
        description="Hugging Face Llama folder -> NeMo 2 checkpoint folder (weights keep "
        "their dtype; tokenizer files go to context/nemo_tokenizer).",
    )
    a.add_argument("--src", required=True, help="Hugging Face folder: config.json and *.safetensors")
    a.add_argument("--dst", required=True, help="NeMo 2 folder to create")
    add_flag(a)
    b = sub.add_parser(
        "nemo-to-hf",
        help="NeMo 2 checkpoint folder -> Hugging Face Llama folder",
        description="NeMo 2 checkpoint folder (ours or NeMo's) -> Hugging Face folder that "
        "transformers' LlamaForCausalLM.from_pretrained loads.",
    )
    b.add_argument("--src", required=True, help="NeMo 2 folder: context/model.yaml and weights/")
    b.add_argument("--dst", required=True, help="Hugging Face folder to create")
    b.add_argument(
        "--max-shard-gb",
        type=float,
        default=DEFAULT_MAX_SHARD_BYTES / 1e9,
        help="largest safetensors file, in GB (default %(default)s)",
    )
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
