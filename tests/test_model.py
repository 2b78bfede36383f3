"""The GPTModel is Llama 3.1: same logits as transformers' LlamaForCausalLM for the same weights."""

import pytest
import torch

from benchmark.config import build_config
from benchmark.hf_mapping import LlamaShape, hf_to_megatron, megatron_to_hf
from benchmark.model import build_model, padded_vocab_size
from benchmark.train import distributed, seed_everything
from tests.helpers import hf_llama31


@pytest.fixture(scope="module")
def smoke_cfg():
    # A CPU test wherever it runs (on a GPU machine DEVICE=auto would pick the GPU and TE's spec).
    cfg = build_config(env={"DEVICE": "cpu"}, preset="smoke")
    # Sequence longer than the RoPE scaling's high-frequency wavelength so the 3.1 scaling matters.
    cfg.model.seq_length = 64
    return cfg


def test_logits_match_transformers(smoke_cfg):
    cfg = smoke_cfg
    vocab = padded_vocab_size(2000, 1)
    assert vocab == 2048
    shape = LlamaShape(
        cfg.model.num_layers, cfg.model.hidden_size, cfg.model.num_attention_heads, cfg.model.num_query_groups
    )
    assert shape.heads_per_group == 2  # GQA with fewer KV groups than heads
    with distributed(cfg) as device:
        seed_everything(3, device)
        model, _ = build_model(cfg, vocab, bf16=False, use_cpu_initialization=True)
        model.eval()
        # Perturb the norms away from ones so a wrong norm mapping cannot go unnoticed.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "layernorm" in name:
                    p.add_(torch.randn_like(p) * 0.1)
        mg_sd = {k: v for k, v in model.state_dict().items() if "_extra_state" not in k}
        hf = hf_llama31(cfg.model, vocab)
        missing, unexpected = hf.load_state_dict(megatron_to_hf(mg_sd, shape), strict=False)
        assert not unexpected and all("rotary" in k for k in missing)
        tokens = torch.randint(0, vocab, (2, cfg.model.seq_length), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ours = model(tokens, None, None).float()  # [b, s, vocab]
            theirs = hf(tokens).logits.float()
        rel = (ours - theirs).norm() / theirs.norm()
        assert rel < 1e-5, f"relative logits error {rel:.2e}"
        # and the loss GPTModel computes from labels is the standard next-token cross-entropy
        labels = torch.roll(tokens, -1, dims=1)
        with torch.no_grad():
            per_token = model(tokens, None, None, labels=labels)
        ref = torch.nn.functional.cross_entropy(theirs.reshape(-1, vocab), labels.reshape(-1), reduction="none")
        torch.testing.assert_close(per_token.reshape(-1), ref, rtol=1e-5, atol=1e-5)


def test_key_map_round_trip(smoke_cfg):
    cfg = smoke_cfg
    shape = LlamaShape(
        cfg.model.num_layers, cfg.model.hidden_size, cfg.model.num_attention_heads, cfg.model.num_query_groups
    )
    with distributed(cfg) as device:
        seed_everything(4, device)
        model, _ = build_model(cfg, 2048, bf16=False, use_cpu_initialization=True)
        sd = {k: v for k, v in model.state_dict().items() if "_extra_state" not in k}
    back = hf_to_megatron(megatron_to_hf(sd, shape), shape)
    assert back.keys() == sd.keys()
    for k in sd:
        assert torch.equal(back[k], sd[k]), k


def test_local_spec_keeps_its_own_final_norm(smoke_cfg, monkeypatch):
    """Given a layer spec, Megatron-Core's block builds its final norm from TE wherever TE imports (a
    CPU run in the container): on a CPU the local spec's model must use the local norm as in its layers."""
    from megatron.core.transformer import transformer_block

    class BlockDefaultNorm(torch.nn.Module):  # stands in for TENorm, the block's default where TE imports
        def __init__(self, *args, **kwargs):
            super().__init__()

    monkeypatch.setattr(transformer_block, "LayerNormImpl", BlockDefaultNorm)
    cfg = smoke_cfg
    assert cfg.parallel.layer_spec == "local"
    with distributed(cfg):
        model, _ = build_model(cfg, padded_vocab_size(2000, 1), bf16=False, use_cpu_initialization=True)
    final, first = model.decoder.final_layernorm, model.decoder.layers[0].input_layernorm
    assert not isinstance(final, BlockDefaultNorm)
    assert type(final) is type(first)
    assert final.weight.shape == (cfg.model.hidden_size,)
