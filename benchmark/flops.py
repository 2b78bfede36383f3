"""Model FLOPs per token, the MLPerf/Megatron causal count (docs/PERFORMANCE.md).

Training FLOPs = 3 x forward (forward + backward of activations + backward of weights):
  matmuls   6 x (L x (2h^2 + 2h*kv + 3h*ffn) + V*h)   (q and o: h^2 each; k and v: h*kv; SwiGLU: 3 h*ffn)
  attention 6 x L x s x h                              (QK^T and AV, halved for the causal mask)
For Llama 3.1 8B at s = 8192 this is 421.59 TFLOP per sequence (about 51.5 GFLOP per token).
"""

from __future__ import annotations

from benchmark.config import ModelConfig

# Dense bf16 peak of an H100 or H200 SXM, the denominator of MFU.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}


def flops_per_token(m: ModelConfig, vocab_size: int) -> float:
    h, kv = m.hidden_size, m.num_query_groups * m.head_dim
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * m.ffn_hidden_size
    return 6 * (m.num_layers * per_layer + vocab_size * h) + 6 * m.num_layers * m.seq_length * h


def parameter_count(m: ModelConfig, vocab_size: int) -> int:
    """Parameters of the GPTModel: the matrices of the FLOP count, the untied embedding and output
    layers (V x h each) and the RMSNorm gains (two per layer and the final one)."""
    h, kv = m.hidden_size, m.num_query_groups * m.head_dim
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * m.ffn_hidden_size + 2 * h
    return m.num_layers * per_layer + 2 * vocab_size * h + h


def peak_flops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_FLOPS.items():
        if key in device_name:
            return value
    return None
