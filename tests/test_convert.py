"""HF <-> NeMo 2 conversion: layout, exact round trips, logits through the GPTModel, bad inputs.

Run: .venv/bin/python -m pytest tests/test_convert.py -q
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from benchmark import hf_weights
from benchmark.config import build_config
from benchmark.model import build_model
from benchmark.train import distributed, seed_everything
from tests.helpers import hf_llama31
from utils import convert

# Small Llama 3.1: GQA (2 KV groups for 4 heads), untied embeddings, llama3 RoPE scaling.
VOCAB = 512
SEQ = 64  # longer than the scaling's high-frequency wavelength, so the 3.1 scaling matters


def small_cfg():
    cfg = build_config(env={}, preset="smoke")
    m = cfg.model
    m.num_layers, m.hidden_size, m.ffn_hidden_size = 2, 64, 160
    m.num_attention_heads, m.num_query_groups, m.seq_length = 4, 2, SEQ
    return cfg


def hf_model(cfg, seed=0):
    torch.manual_seed(seed)
    model = hf_llama31(cfg.model, VOCAB, bos_token_id=5, eos_token_id=6)
    with torch.no_grad():  # norms away from ones, so a misplaced norm cannot go unnoticed
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A small HF checkpoint (sharded, with tokenizer files) and its NeMo conversion."""
    root = tmp_path_factory.mktemp("convert")
    cfg = small_cfg()
    model = hf_model(cfg)
    hf_dir = root / "hf"
    model.save_pretrained(hf_dir, max_shard_size="100KB")  # several shards + index
    (hf_dir / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 131072}))
    (hf_dir / "tokenizer.json").write_text("{}")
    nemo_dir = root / "nemo"
    summary = convert.hf_to_nemo(hf_dir, nemo_dir)
    return {"root": root, "cfg": cfg, "hf": model, "hf_dir": hf_dir, "nemo_dir": nemo_dir, "summary": summary}


def tokens(cfg, batch=2):
    return torch.randint(0, VOCAB, (batch, cfg.model.seq_length), generator=torch.Generator().manual_seed(0))


def hf_tensors(hf_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(hf_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def nemo_tensors(nemo_dir: Path) -> dict[str, torch.Tensor]:
    weights = hf_weights.NemoWeights(nemo_dir)
    return {
        k[len(weights.prefix) :]: weights.load(k[len(weights.prefix) :])
        for k in weights.meta
        if not k.startswith("optimizer.")
    }


def test_nemo_layout(work):
    weights = work["nemo_dir"] / "weights"
    # What NeMo's MegatronCheckpointIO writes (torch_dist, two writer threads on one rank).
    assert sorted(p.name for p in weights.iterdir()) == sorted(
        ["__0_0.distcp", "__0_1.distcp", ".metadata", "common.pt", "metadata.json"]
    )
    assert json.loads((weights / "metadata.json").read_text())["sharded_backend"] == "torch_dist"
    model_yaml = yaml.safe_load((work["nemo_dir"] / "context" / "model.yaml").read_text())
    assert model_yaml["config"]["_target_"].endswith("Llama31Config")
    assert model_yaml["config"]["num_query_groups"] == 2
    assert sorted(p.name for p in (work["nemo_dir"] / "context" / "nemo_tokenizer").iterdir()) == [
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    meta = hf_weights.NemoWeights(work["nemo_dir"]).meta
    cfg = work["cfg"]
    assert meta["module.decoder.layers.self_attention.linear_qkv.weight"].global_shape == (2, (4 + 2 * 2) * 16, 64)
    assert meta["module.decoder.layers.mlp.linear_fc1.layer_norm_weight"].global_shape == (2, 64)
    # The keys and global shapes are exactly those Megatron-Core's own GPTModel asks for (the local
    # spec maps its norms onto TransformerEngine's fused names for checkpointing).
    from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensorFactory
    from megatron.core.dist_checkpointing.strategies.torch import TorchDistLoadShardedStrategy

    with distributed(cfg):
        model, _ = build_model(cfg, VOCAB, bf16=False, use_cpu_initialization=True)
        wanted = model.sharded_state_dict(prefix="module.")
        saved = TorchDistLoadShardedStrategy().load_sharded_metadata(weights)
    tensors = {v.key: hf_weights._global_shape(v) for v in wanted.values() if not isinstance(v, ShardedObject)}
    assert tensors == {k: tuple(v.global_shape) for k, v in meta.items()}
    assert not any(isinstance(v, ShardedTensorFactory) for v in saved.values())
    objects = {v.unique_key for v in wanted.values() if isinstance(v, ShardedObject)}
    assert objects == {k for k, v in saved.items() if isinstance(v, ShardedObject)}
    assert "module.decoder.layers.self_attention.linear_qkv._extra_state/shard_1_2" in objects


@pytest.mark.parametrize("source", ["nemo", "hf"])
def test_gptmodel_loaded_matches_transformers(work, source):
    """Both loaders: from our NeMo conversion, and straight from the Hugging Face folder."""
    cfg = work["cfg"]
    with distributed(cfg) as device:
        seed_everything(1, device)
        model, _ = build_model(cfg, VOCAB, bf16=False, use_cpu_initialization=True)
        model.eval()
        if source == "nemo":
            assert hf_weights.load_nemo_weights_into(model, work["nemo_dir"]) == 0
        else:
            assert hf_weights.load_hf_weights_into(model, work["hf_dir"]) == 0
        x = tokens(cfg)
        with torch.no_grad():
            ours = model(x, None, None).float()
            theirs = work["hf"](x).logits.float()
    rel = ((ours - theirs).norm() / theirs.norm()).item()
    assert rel < 1e-5, f"relative logits error {rel:.2e}"


def test_hf_nemo_hf_is_identical_and_loads_in_transformers(work):
    from transformers import AutoModelForCausalLM

    back = work["root"] / "hf_back"
    summary = convert.nemo_to_hf(work["nemo_dir"], back, max_shard_bytes=150_000)
    assert len(summary["files"]) > 1 and (back / "model.safetensors.index.json").is_file()
    original, returned = hf_tensors(work["hf_dir"]), hf_tensors(back)
    assert original.keys() == returned.keys()
    for k in original:
        assert original[k].dtype == returned[k].dtype and torch.equal(original[k], returned[k]), k
    assert sorted(p.name for p in back.glob("tokenizer*")) == ["tokenizer.json", "tokenizer_config.json"]
    assert json.loads((back / "generation_config.json").read_text())["bos_token_id"] == 5
    loaded = AutoModelForCausalLM.from_pretrained(back).eval()
    assert loaded.config.rope_parameters["rope_type"] == "llama3"
    x = tokens(work["cfg"], batch=1)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, work["hf"](x).logits)


def test_nemo_hf_nemo_is_identical(work):
    hf_again = work["root"] / "hf_again"
    convert.nemo_to_hf(work["nemo_dir"], hf_again)
    nemo_again = work["root"] / "nemo_again"
    convert.hf_to_nemo(hf_again, nemo_again)
    first, second = nemo_tensors(work["nemo_dir"]), nemo_tensors(nemo_again)
    assert first.keys() == second.keys()
    for k in first:
        assert torch.equal(first[k], second[k]), k


def test_shape_mismatch_with_model_names_the_tensor(work):
    cfg = small_cfg()
    cfg.model.ffn_hidden_size = 128
    with distributed(cfg):
        model, _ = build_model(cfg, VOCAB, bf16=False, use_cpu_initialization=True)
        with pytest.raises(hf_weights.ConvertError, match="linear_fc1.weight.*shape"):
            hf_weights.load_nemo_weights_into(model, work["nemo_dir"])
        with pytest.raises(hf_weights.ConvertError, match="linear_fc1.weight.*shape"):
            hf_weights.load_hf_weights_into(model, work["hf_dir"])


# -- bad input: a clear error, and nothing left at (or beside) the destination ------------------


def copy_hf(work, name):
    dst = work["root"] / name
    shutil.copytree(work["hf_dir"], dst)
    return dst


def assert_fails_cleanly(src, dst, match, direction="hf-to-nemo", capsys=None):
    before = set(dst.parent.iterdir())
    code = convert.main([direction, "--src", str(src), "--dst", str(dst)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert match in err, err
    assert set(dst.parent.iterdir()) == before  # no destination, no temporary folder


def test_not_a_llama_checkpoint(work, capsys):
    empty = work["root"] / "empty"
    empty.mkdir(exist_ok=True)
    assert_fails_cleanly(empty, work["root"] / "out1", "no config.json", capsys=capsys)
    gpt2 = copy_hf(work, "gpt2")
    cfg = json.loads((gpt2 / "config.json").read_text())
    (gpt2 / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    assert_fails_cleanly(gpt2, work["root"] / "out2", "is not a Llama checkpoint", capsys=capsys)
    assert_fails_cleanly(work["hf_dir"], work["root"] / "out3", "not a NeMo 2 checkpoint", "nemo-to-hf", capsys)


def test_missing_shard(work, capsys):
    broken = copy_hf(work, "missing_shard")
    shard = sorted(broken.glob("model-*.safetensors"))[1]
    shard.unlink()
    assert_fails_cleanly(broken, work["root"] / "out", f"{shard.name}", capsys=capsys)


def test_config_disagrees_with_weights(work, capsys):
    broken = copy_hf(work, "wrong_config")
    cfg = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**cfg, "num_key_value_heads": 4}))
    assert_fails_cleanly(broken, work["root"] / "out", "self_attn.k_proj.weight has shape", capsys=capsys)


def test_existing_destination(work, capsys):
    dst = work["root"] / "taken"
    dst.mkdir()
    (dst / "keep.txt").write_text("x")
    assert_fails_cleanly(work["hf_dir"], dst, "already exists and is not empty", capsys=capsys)
    assert (dst / "keep.txt").read_text() == "x"


def test_failure_midway_leaves_nothing(work, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(convert, "save_nemo_weights", boom)
    dst = work["root"] / "midway"
    with pytest.raises(RuntimeError, match="disk full"):
        convert.hf_to_nemo(work["hf_dir"], dst)
    assert not dst.exists() and not list(work["root"].glob(".midway.tmp-*"))


def test_help_lists_both_directions(capsys):
    with pytest.raises(SystemExit) as exit_info:
        convert.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "hf-to-nemo" in out and "nemo-to-hf" in out


# -- NeMo's own importer, where NeMo 2 is installed (the container) -----------------------------


def test_matches_nemo_importer(work):
    pytest.importorskip("nemo.collections.llm", reason="NeMo 2 is not installed (only in the container)")
    from nemo.collections import llm
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # NeMo's importer loads the source's tokenizer, so this copy carries a real (tiny) one.
    src = copy_hf(work, "hf_with_tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (src / name).unlink()
    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0").save_pretrained(src)
    out = work["root"] / "nemo_by_nemo"
    llm.import_ckpt(model=llm.LlamaModel(llm.Llama31Config8B()), source=f"hf://{src}", output_path=out)
    ours, theirs = nemo_tensors(work["nemo_dir"]), nemo_tensors(out)
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert torch.equal(ours[k], theirs[k].to(ours[k].dtype)), k


def test_slurm_wrapper_usage():
    import subprocess

    script = Path(__file__).resolve().parent.parent / "utils" / "launch_nemo_convert.sh"
    shown = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "sbatch utils/launch_nemo_convert.sh HF_DIR NEMO_DIR" in shown.stdout
    wrong = subprocess.run(["bash", str(script), "only-one-arg"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "--to-hf" in wrong.stderr


# -- tensor parallelism: each rank loads its own slices -----------------------------------------

TP_WORKER = """
import sys, torch
from benchmark.model import build_model
from benchmark.train import distributed
from tests.test_convert import small_cfg, tokens, VOCAB
from benchmark import hf_weights

kind, path, out = sys.argv[1:4]
cfg = small_cfg()
cfg.parallel.tensor_parallel = 2
cfg.parallel.device = "cpu"
with distributed(cfg):
    model, _ = build_model(cfg, VOCAB, bf16=False, use_cpu_initialization=True)
    model.eval()
    load = hf_weights.load_nemo_weights_into if kind == "nemo" else hf_weights.load_hf_weights_into
    load(model, path)
    with torch.no_grad():
        # Each rank's vocabulary slice (Megatron-Core's gather of the output allocates on CUDA).
        logits = model(tokens(cfg), None, None)
    torch.save(logits, f"{out}.{torch.distributed.get_rank()}")
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nemo", "hf"])
def test_tensor_parallel_load_matches_transformers(work, kind, tmp_path):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    path = work["nemo_dir"] if kind == "nemo" else work["hf_dir"]
    out = tmp_path / "logits.pt"
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(hf_weights._free_port()), "WORLD_SIZE": "2"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TP_WORKER, kind, str(path), str(out)],
            cwd=repo,
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    ours = torch.cat([torch.load(f"{out}.{r}") for r in range(2)], dim=-1)
    with torch.no_grad():
        theirs = work["hf"](tokens(work["cfg"])).logits
    rel = ((ours - theirs).norm() / theirs.norm()).item()
    assert rel < 1e-5, f"relative logits error {rel:.2e} with TP=2"
