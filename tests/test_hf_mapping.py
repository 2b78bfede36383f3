"""The key map: one table, its inverse, the fusions' layouts and the NeMo/TransformerEngine names."""

import torch

from benchmark import hf_mapping as km

SHAPE = km.LlamaShape(num_layers=2, hidden_size=8, num_attention_heads=4, num_query_groups=2)


def test_every_tensor_is_listed_once_and_the_inverse_is_the_table_read_backwards():
    hf_names = [hf for hf, _, _ in km.KEY_MAP]
    assert len(hf_names) == len(set(hf_names)) == 12
    assert km.megatron_sources()["decoder.layers.{i}.self_attention.linear_qkv.weight"] == (
        "qkv",
        (
            "model.layers.{i}.self_attn.q_proj.weight",
            "model.layers.{i}.self_attn.k_proj.weight",
            "model.layers.{i}.self_attn.v_proj.weight",
        ),
    )
    assert km.megatron_sources()["decoder.layers.{i}.mlp.linear_fc1.weight"] == (
        "fc1",
        ("model.layers.{i}.mlp.gate_proj.weight", "model.layers.{i}.mlp.up_proj.weight"),
    )
    assert len(km.megatron_sources()) == 9
    assert km.hf_sources()["model.layers.{i}.mlp.up_proj.weight"] == km.Source(
        "decoder.layers.{i}.mlp.linear_fc1.weight", "fc1", 1
    )
    assert km.hf_sources()["lm_head.weight"] == km.Source("output_layer.weight", None, 0)


def test_nemo_names_come_from_the_local_specs_keys_map():
    assert km.te_name("decoder.layers.{i}.input_layernorm.weight") == (
        "decoder.layers.{i}.self_attention.linear_qkv.layer_norm_weight"
    )
    assert km.te_name("decoder.layers.{i}.pre_mlp_layernorm.weight") == (
        "decoder.layers.{i}.mlp.linear_fc1.layer_norm_weight"
    )
    assert km.te_name("decoder.layers.{i}.mlp.linear_fc2.weight") == "decoder.layers.{i}.mlp.linear_fc2.weight"
    assert km.te_name("decoder.final_layernorm.weight") == "decoder.final_layernorm.weight"
    assert km.te_layer_fields() == (
        "self_attention.linear_qkv.layer_norm_weight",
        "self_attention.linear_qkv.weight",
        "self_attention.linear_proj.weight",
        "mlp.linear_fc1.layer_norm_weight",
        "mlp.linear_fc1.weight",
        "mlp.linear_fc2.weight",
    )
    assert km.stacked("decoder.layers.{i}.mlp.linear_fc1.weight") == "decoder.layers.mlp.linear_fc1.weight"


def test_qkv_is_interleaved_per_query_group_and_fc1_is_gate_then_up():
    d, h = SHAPE.head_dim, SHAPE.hidden_size  # head_dim 2
    # Row r of each projection holds the value r (q), 100 + r (k), 200 + r (v).
    q = torch.arange(4 * d, dtype=torch.float32)[:, None].expand(-1, h)
    k = 100 + torch.arange(2 * d, dtype=torch.float32)[:, None].expand(-1, h)
    v = 200 + torch.arange(2 * d, dtype=torch.float32)[:, None].expand(-1, h)
    gate, up = torch.zeros(6, h), torch.ones(6, h)
    hf = {
        "model.layers.0.self_attn.q_proj.weight": q,
        "model.layers.0.self_attn.k_proj.weight": k,
        "model.layers.0.self_attn.v_proj.weight": v,
        "model.layers.0.mlp.gate_proj.weight": gate,
        "model.layers.0.mlp.up_proj.weight": up,
    }
    qkv = km.to_megatron(hf.__getitem__, "decoder.layers.{i}.self_attention.linear_qkv.weight", SHAPE, 0)
    # Group 0: query heads 0 and 1, key head 0, value head 0; then group 1 likewise.
    assert qkv[:, 0].tolist() == [0, 1, 2, 3, 100, 101, 200, 201, 4, 5, 6, 7, 102, 103, 202, 203]
    fc1 = km.to_megatron(hf.__getitem__, "decoder.layers.{i}.mlp.linear_fc1.weight", SHAPE, 0)
    assert fc1[:, 0].tolist() == [0] * 6 + [1] * 6
    assert torch.equal(km.from_megatron(qkv, "model.layers.{i}.self_attn.k_proj.weight", SHAPE), k)
    assert torch.equal(km.from_megatron(fc1, "model.layers.{i}.mlp.up_proj.weight", SHAPE), up)


def test_state_dict_round_trip_in_both_directions():
    g = torch.Generator().manual_seed(0)
    h, q, kv, f, vocab = 8, 8, 4, 6, 16
    rows = {
        "embed_tokens": (vocab, h),
        "input_layernorm": (h,),
        "q_proj": (q, h),
        "k_proj": (kv, h),
        "v_proj": (kv, h),
        "o_proj": (h, q),
        "post_attention_layernorm": (h,),
        "gate_proj": (f, h),
        "up_proj": (f, h),
        "down_proj": (h, f),
        "norm": (h,),
        "lm_head": (vocab, h),
    }
    hf = {
        name: torch.randn(rows[name.split(".")[-2]], generator=g)
        for pattern, _, _ in km.KEY_MAP
        for name in km.expand(pattern, SHAPE.num_layers)
    }
    mg = km.hf_to_megatron(hf, SHAPE)
    assert len(hf) == 3 + 9 * 2 and len(mg) == 3 + 6 * 2
    assert mg["decoder.layers.1.self_attention.linear_qkv.weight"].shape == (q + 2 * kv, h)
    assert torch.equal(
        mg["decoder.layers.1.pre_mlp_layernorm.weight"], hf["model.layers.1.post_attention_layernorm.weight"]
    )
    back = km.megatron_to_hf(mg, SHAPE)
    assert back.keys() == hf.keys() and all(torch.equal(back[k], hf[k]) for k in hf)
    again = km.hf_to_megatron(back, SHAPE)
    assert again.keys() == mg.keys() and all(torch.equal(again[k], mg[k]) for k in mg)
