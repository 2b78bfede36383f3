"""Helpers shared by the tests that run the benchmark loop on the embedded dataset."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

from benchmark.config import Config, ModelConfig, build_config

# The model of the CPU tests that train: the 8B's layout (GQA, SwiGLU) at a size that trains in seconds.
TINY_MODEL = {
    "NUM_LAYERS": "2",
    "HIDDEN_SIZE": "64",
    "FFN_HIDDEN_SIZE": "192",
    "NUM_HEADS": "4",
    "NUM_KV_GROUPS": "2",
    "SEQ_LENGTH": "64",
}


def smoke_config(smoke_data, tmp_path, env: dict) -> Config:
    """The smoke preset on the embedded dataset, results under tmp_path, with env's knobs on top."""
    full = {
        "PRESET": "smoke",
        "DEVICE": "cpu",
        "PREPROCESSED_PATH": str(smoke_data.data_dir),
        "TOKENIZER_PATH": str(smoke_data.tokenizer_dir),
        "RESULT_DIR": str(tmp_path),
    }
    full.update({k: str(v) for k, v in env.items()})
    return build_config(env=full)


def mllog_events(path) -> list[dict]:
    """The JSON of every :::MLLOG line of a log, in order."""
    return [
        json.loads(line.split(":::MLLOG ", 1)[1])
        for line in Path(path).read_text().splitlines()
        if line.startswith(":::MLLOG ")
    ]


def hf_llama31(m: ModelConfig, vocab: int, **config_extra):
    """transformers' LlamaForCausalLM with the Llama 3.1 settings of m (GQA, llama3 RoPE scaling,
    untied embeddings, no biases), randomly initialised from torch's current seed, in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=m.hidden_size,
        intermediate_size=m.ffn_hidden_size,
        num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.num_query_groups,
        head_dim=m.head_dim,
        rms_norm_eps=m.norm_eps,
        max_position_embeddings=131072,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": float(m.rotary_base),
            "factor": m.rope_scaling_factor,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        **config_extra,
    )
    return LlamaForCausalLM(config).eval()


def raw_rcps(ruleset: str = "6.0.0") -> dict[int, dict]:
    """The llama31_8b RCP records straight from the JSON file mlperf-logging ships, by batch size.

    Independent of the library's RCP_Checker, so tests can hold the project's figures (which come
    from the checker) against numbers computed here: "olympic" drops the fastest and the slowest run.
    """
    from mlperf_logging.rcp_checker import rcp_checker

    path = Path(rcp_checker.__file__).parent / f"training_{ruleset}" / "rcps_llama31_8b.json"
    out = {}
    for record in json.loads(path.read_text()).values():
        runs = sorted(record["Epochs to converge"])
        out[int(record["BS"])] = {
            "runs": runs,
            "olympic": sum(runs[1:-1]) / (len(runs) - 2),
            "lr": record["Hyperparams"]["opt_base_learning_rate"],
            "warmup": record["Hyperparams"]["opt_learning_rate_warmup_samples"],
        }
    return out


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if not shutil.which("mount"):
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A tmpfs mounted at path with these mount options, unmounted after; yields False where mounting
    is not allowed (path is then a plain folder)."""
    if not _mount_tmpfs(path, options):
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
