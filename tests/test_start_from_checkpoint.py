"""The benchmark starts from Llama weights: USE_CKPT=1 with a NeMo 2 folder, or FROM_HF=1 with a HF one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmark.config import ConfigError, ModelConfig
from benchmark.data import build_train_dataset, load_tokenizer_info
from benchmark.train import run
from tests.helpers import TINY_MODEL, hf_llama31, smoke_config
from utils import convert

SHAPE = {
    **TINY_MODEL,
    "LOG_EVERY": "1000",
    "GBS": "16",
    "MBS": "8",
    "EVAL_EVERY": "32",
    "EVAL_SAMPLES": "8",
    "MAX_TRAIN_SAMPLES": "32",
    "TARGET": "0.01",
    "SEED": "9",
}


@pytest.fixture(scope="module")
def llama(tmp_path_factory, smoke_data):
    """A random Llama 3.1-style HF model of the smoke data's vocabulary, and its NeMo conversion."""
    vocab = load_tokenizer_info(str(smoke_data.tokenizer_dir)).vocab_size
    torch.manual_seed(0)
    model = hf_llama31(
        ModelConfig(num_layers=2, hidden_size=64, ffn_hidden_size=192, num_attention_heads=4, num_query_groups=2), vocab
    )
    root = tmp_path_factory.mktemp("start")
    model.save_pretrained(root / "hf")
    convert.hf_to_nemo(root / "hf", root / "nemo", log=lambda line: None)
    return model, root


def configure(smoke_data, tmp_path, **extra):
    return smoke_config(smoke_data, tmp_path, {**SHAPE, **extra})


def first_batch_loss(model, cfg, smoke_data) -> float:
    """transformers' loss on the run's first global batch (GPTDataset, same seed and cache)."""
    ds = build_train_dataset(
        list(smoke_data.train_prefixes),
        seq_length=64,
        num_samples=cfg.train.max_train_samples,
        seed=cfg.train.seed,
        tokenizer=load_tokenizer_info(str(smoke_data.tokenizer_dir)),
        cache_dir=str(Path(smoke_data.data_dir) / "index_cache"),
    )
    tokens = torch.stack([ds[i]["tokens"] for i in range(16)])
    labels = torch.stack([ds[i]["labels"] for i in range(16)])
    with torch.no_grad():
        logits = model(tokens).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1)).item()


@pytest.mark.parametrize("form", ["nemo", "hf"])
def test_run_starts_from_converted_weights(llama, smoke_data, tmp_path, form):
    model, root = llama
    cfg = configure(smoke_data, tmp_path, USE_CKPT=1, FROM_HF=int(form == "hf"), MODEL_CKPT=root / form)
    result = run(cfg, log_path=tmp_path / "start.log", echo=False, stop_after_steps=1)
    # the first step's loss is the loaded model's loss on the first batch, as transformers computes it
    assert result.train_losses[0] == pytest.approx(first_batch_loss(model, cfg, smoke_data), rel=1e-5)
    values = {}
    for line in (tmp_path / "start.log").read_text().splitlines():
        event = json.loads(line.split(":::MLLOG ", 1)[1])
        values.setdefault(event["key"], event["value"])
    assert values["init_checkpoint_step"] == 0


def test_start_knobs_are_checked(llama, smoke_data, tmp_path):
    _, root = llama
    with pytest.raises(ConfigError, match="FROM_HF=1 but MODEL_CKPT=.*has no config.json"):
        configure(smoke_data, tmp_path, USE_CKPT=1, FROM_HF=1, MODEL_CKPT=root / "nemo")
    with pytest.raises(ConfigError, match="has no weights/ folder: give a NeMo 2 checkpoint"):
        configure(smoke_data, tmp_path, USE_CKPT=1, MODEL_CKPT=root / "hf")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on the GPU machine)")
def test_gpu_bf16_loss_matches_cpu_fp32(llama, smoke_data, tmp_path):
    """Same weights, same batch: the GPU engine's bf16 loss is the CPU fp32 loss within bf16 rounding."""
    model, root = llama
    cfg = configure(smoke_data, tmp_path, DEVICE="cuda", FROM_HF=1, MODEL_CKPT=root / "hf")
    result = run(cfg, log_path=tmp_path / "gpu.log", echo=False, stop_after_steps=1)
    reference = first_batch_loss(model, cfg, smoke_data)  # transformers, fp32, on CPU
    gpu = result.train_losses[0]
    # bf16 keeps 8 significant bits (relative rounding 2^-9 per value); through two layers and the
    # cross-entropy the loss moves by well under 1%, while a wrong weight or batch moves it by far more.
    assert gpu == pytest.approx(reference, rel=1e-2)
    assert gpu != reference  # it did run in bf16, not fp32
