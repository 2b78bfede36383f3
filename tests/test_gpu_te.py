"""The TransformerEngine layer spec and FP8 on a GPU, and the GPU engine's weight decay.

Runs where CUDA is present (TE tests also need transformer_engine); skipped elsewhere with the reason.
Figures from these tests are recorded in docs/PERFORMANCE.md with the card they came from.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from benchmark.train import run
from tests.helpers import hf_llama31, smoke_config

HAVE_TE = importlib.util.find_spec("transformer_engine") is not None
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on the GPU machine)"),
]
needs_te = pytest.mark.skipif(not HAVE_TE, reason="needs TransformerEngine (the container, or TE on the GPU machine)")


def configure(smoke_data, tmp_path, **extra):
    return smoke_config(smoke_data, tmp_path, {"DEVICE": "cuda", **extra})


SMALL = dict(EVAL_EVERY=256, MAX_TRAIN_SAMPLES=768, TARGET=0.01, EVAL_SAMPLES=64, EVAL_SET="file-order")


def _logits(cfg, vocab, load, tokens, bf16):
    from benchmark.model import build_model
    from benchmark.train import distributed, seed_everything

    with distributed(cfg) as device:
        seed_everything(0, device)
        model, name = build_model(cfg, vocab, bf16=bf16, use_cpu_initialization=False)
        model.cuda()
        load(model)
        model.eval()
        if bf16:
            from megatron.core.transformer.module import Float16Module

            model = Float16Module(model.config, model)
        with torch.no_grad():
            logits = model(tokens.cuda(), None, None).float().cpu()
            labels = torch.roll(tokens, -1, dims=1).cuda()
            loss = model(tokens.cuda(), None, None, labels=labels).float().mean().item()
    return logits, loss, name


@needs_te
@pytest.mark.parametrize("source", ["hf", "nemo"])
def test_te_spec_equals_local_spec_and_transformers(smoke_data, tmp_path, source):
    """Same weights (a Hugging Face folder, or the NeMo 2 folder utils.convert writes from it): the TE
    spec's logits equal the local spec's within bf16 tolerance, and its loss transformers' fp32 loss."""
    from benchmark.hf_weights import load_hf_weights_into, load_nemo_weights_into
    from utils.convert import hf_to_nemo

    cfg_local = configure(smoke_data, tmp_path, LAYER_SPEC="local", SEQ_LENGTH=256)
    cfg_te = configure(smoke_data, tmp_path, LAYER_SPEC="te", SEQ_LENGTH=256)
    m, vocab = cfg_te.model, 2048
    torch.manual_seed(5)
    hf = hf_llama31(m, vocab)
    with torch.no_grad():  # norms away from ones, so that a wrong norm mapping cannot go unnoticed
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(tmp_path / "hf")
    if source == "nemo":
        hf_to_nemo(tmp_path / "hf", tmp_path / "nemo", log=lambda line: None)

        def load(model):
            load_nemo_weights_into(model, tmp_path / "nemo")
    else:

        def load(model):
            load_hf_weights_into(model, tmp_path / "hf")

    tokens = torch.randint(0, vocab, (2, m.seq_length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf.float()(tokens).logits.float()
        ref_loss = torch.nn.functional.cross_entropy(
            ref.reshape(-1, vocab), torch.roll(tokens, -1, dims=1).reshape(-1)
        ).item()
    te_logits, te_loss, te_name = _logits(cfg_te, vocab, load, tokens, bf16=True)
    local_logits, local_loss, _ = _logits(cfg_local, vocab, load, tokens, bf16=True)
    assert "TransformerEngine" in te_name
    rel_local = ((te_logits - local_logits).norm() / local_logits.norm()).item()
    rel_hf = ((te_logits - ref).norm() / ref.norm()).item()
    print(
        f"[te-vs-local] logits rel {rel_local:.2e}; vs transformers fp32 rel {rel_hf:.2e}; "
        f"loss te {te_loss:.5f} local {local_loss:.5f} hf-fp32 {ref_loss:.5f}"
    )
    assert rel_local < 2e-2 and rel_hf < 2e-2  # bf16 keeps 8 bits of mantissa: ~4e-3 per rounding
    assert abs(te_loss - ref_loss) / ref_loss < 5e-3
    assert abs(te_loss - local_loss) / local_loss < 5e-3


@needs_te
@pytest.mark.parametrize("recipe", ["tensorwise", "delayed", "blockwise"])
def test_fp8_first_step_loss_is_bf16s(smoke_data, tmp_path, recipe):
    bf16 = run(
        configure(smoke_data, tmp_path, LAYER_SPEC="te", **SMALL),
        log_path=tmp_path / "b.log",
        echo=False,
        stop_after_steps=3,
    )
    fp8 = run(
        configure(smoke_data, tmp_path, LAYER_SPEC="te", FP8=1, FP8_RECIPE=recipe, **SMALL),
        log_path=tmp_path / "f.log",
        echo=False,
        stop_after_steps=3,
    )
    print(f"[fp8-{recipe}] first losses bf16 {bf16.train_losses} fp8 {fp8.train_losses}")
    assert abs(fp8.train_losses[0] - bf16.train_losses[0]) / bf16.train_losses[0] < 0.01


@needs_te
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"CKPT_FORMAT": "portable"},
        {"PRECISION_AWARE_OPTIMIZER": "off"},
        {"FP8": 1},
        {"FP8": 1, "FP8_RECIPE": "delayed", "FP8_AMAX_HISTORY": 16, "FP8_PARAM_GATHER": "off"},
        # TE's FP8 attention (cuDNN) found no kernel for the smoke shape's head size 32; 128 as the 8B's.
        pytest.param(
            {
                "FP8": 1,
                "FP8_ATTENTION": 1,
                "HIDDEN_SIZE": 256,
                "FFN_HIDDEN_SIZE": 768,
                "NUM_HEADS": 2,
                "NUM_KV_GROUPS": 1,
            },
            # Megatron-Core 0.16.1's TEDotProductAttention leaves its _extra_state (the attention's FP8
            # scaling state) out of its sharded state dict, so a resumed run restarts it: the first loss
            # after the resume differed by 1.8e-3 on an H200 (8.9e-2 at most under delayed scaling).
            marks=pytest.mark.xfail(strict=True, reason="FP8 attention's scaling state is not checkpointed"),
        ),
    ],
    ids=[
        "bf16",
        "bf16-portable",
        "bf16-distributed-optimizer-copies",
        "fp8-tensorwise",
        "fp8-delayed",
        "fp8-attention",
    ],
)
def test_pause_and_resume_under_te(smoke_data, tmp_path, extra):
    """Under the TE spec the precision-aware optimizer is on by default; the off case keeps the distributed
    optimizer's own fp32 copies covered."""
    _pause_resume_repeats_the_whole_run(smoke_data, tmp_path, {"LAYER_SPEC": "te", **SMALL, **extra}, str(extra))


def _paused_and_resumed(smoke_data, tmp_path, env, resume_env=None):
    """The run of env paused after 256 samples, then resumed (with resume_env's knobs on top)."""
    ckpt = tmp_path / "ckpt"
    first = run(
        configure(smoke_data, tmp_path, **{**env, "CHECKPOINT_DIR": ckpt, "JOB_SAMPLES": 256}),
        log_path=tmp_path / "p1.log",
        echo=False,
    )
    second = run(
        configure(smoke_data, tmp_path, **{**env, **(resume_env or {}), "CHECKPOINT_DIR": ckpt}),
        log_path=tmp_path / "p2.log",
        echo=False,
    )
    return first, second


def _pause_resume_repeats_the_whole_run(smoke_data, tmp_path, env, label):
    whole = run(configure(smoke_data, tmp_path, **env), log_path=tmp_path / "w.log", echo=False)
    first, second = _paused_and_resumed(smoke_data, tmp_path, env)
    resumed = first.train_losses + second.train_losses
    assert first.samples == 256 and second.samples == 768 and len(resumed) == len(whole.train_losses) == 48
    diff = max(abs(a - b) for a, b in zip(resumed, whole.train_losses, strict=True))
    print(
        f"[resume {label}] largest loss difference after the resume {diff:.3e}; "
        f"bit for bit: {resumed == whole.train_losses}"
    )
    assert resumed == whole.train_losses
    assert second.eval_curve == whole.eval_curve


@needs_te
@pytest.mark.parametrize("ckpt_format", ["fast", "portable"])
def test_precision_aware_optimizer_pauses_and_resumes(smoke_data, tmp_path, monkeypatch, ckpt_format):
    """Megatron-Core's precision-aware optimizer (TE's FusedAdam reads the bf16 gradients and keeps the
    fp32 master weights itself; ``PRECISION_AWARE_OPTIMIZER=on``) resumes to the uninterrupted run's
    losses from either checkpoint format; the fast one loads only with
    benchmark.mcore_workarounds.skip_non_tensor_state_on_load (Megatron-Core 0.16.1)."""
    from benchmark import mcore_workarounds

    # The optimizers the engines built, seen where the engine hands each one to a workaround.
    built = []
    check = mcore_workarounds.check_grad_norm_before_update

    def seen(optimizer, *args, **kwargs):
        built.append(optimizer)
        return check(optimizer, *args, **kwargs)

    monkeypatch.setattr(mcore_workarounds, "check_grad_norm_before_update", seen)
    env = {"LAYER_SPEC": "te", "CKPT_FORMAT": ckpt_format, "PRECISION_AWARE_OPTIMIZER": "on", **SMALL}
    _pause_resume_repeats_the_whole_run(smoke_data, tmp_path, env, f"precision-aware, {ckpt_format}")
    assert len(built) == 3
    assert all(o.config.use_precision_aware_optimizer and not o.config.store_param_remainders for o in built)


@needs_te
@pytest.mark.parametrize("ckpt_format", ["fast", "portable"])
def test_checkpoint_without_the_precision_aware_optimizer_resumes_with_it(smoke_data, tmp_path, ckpt_format):
    """A run checkpointed with PRECISION_AWARE_OPTIMIZER=off (every TE run before it became the default)
    resumes with it on: weights, moments and step carry over, so the first loss after the resume is the
    paused run's own and the later ones stay within the two optimizer paths' own difference."""
    base = {"LAYER_SPEC": "te", "CKPT_FORMAT": ckpt_format, **SMALL}
    on = run(
        configure(smoke_data, tmp_path, PRECISION_AWARE_OPTIMIZER="on", **base),
        log_path=tmp_path / "on.log",
        echo=False,
    )
    off = run(
        configure(smoke_data, tmp_path, PRECISION_AWARE_OPTIMIZER="off", **base),
        log_path=tmp_path / "off.log",
        echo=False,
    )
    first, second = _paused_and_resumed(
        smoke_data, tmp_path, {**base, "PRECISION_AWARE_OPTIMIZER": "off"}, {"PRECISION_AWARE_OPTIMIZER": "on"}
    )
    n = len(first.train_losses)
    assert first.train_losses == off.train_losses[:n] and len(second.train_losses) == len(off.train_losses) - n
    spread = max(abs(a - b) for a, b in zip(on.train_losses[n:], off.train_losses[n:], strict=True))
    drift = max(abs(a - b) for a, b in zip(second.train_losses, off.train_losses[n:], strict=True))
    eval_spread = abs(on.eval_curve[-1][1] - off.eval_curve[-1][1])
    eval_drift = abs(second.eval_curve[-1][1] - off.eval_curve[-1][1])
    print(
        f"[off -> on, {ckpt_format}] loss drift {drift:.2e} against the paths' spread {spread:.2e}; "
        f"final eval drift {eval_drift:.2e} against {eval_spread:.2e}"
    )
    assert second.train_losses[0] == off.train_losses[n]  # same weights, same batch
    assert drift <= 2 * spread + 1e-3
    assert eval_drift <= 2 * eval_spread + 1e-3


@needs_te
@pytest.mark.parametrize("first_spec, second_spec", [("local", "te"), ("te", "local")])
def test_checkpoint_of_one_spec_resumes_under_the_other(smoke_data, tmp_path, first_spec, second_spec):
    """CKPT_FORMAT=portable moves a run between layer specs; a "fast" checkpoint is refused there."""
    from benchmark.checkpoint import CheckpointError

    fast = tmp_path / "fast"
    run(
        configure(smoke_data, tmp_path, LAYER_SPEC=first_spec, CHECKPOINT_DIR=fast, JOB_SAMPLES=256, **SMALL),
        log_path=tmp_path / "f1.log",
        echo=False,
    )
    with pytest.raises(CheckpointError, match=f"saved under LAYER_SPEC={first_spec} with CKPT_FORMAT=fast"):
        run(
            configure(smoke_data, tmp_path, LAYER_SPEC=second_spec, CHECKPOINT_DIR=fast, **SMALL),
            log_path=tmp_path / "f2.log",
            echo=False,
        )
    whole = run(
        configure(smoke_data, tmp_path, LAYER_SPEC=first_spec, **SMALL), log_path=tmp_path / "w.log", echo=False
    )
    ckpt = tmp_path / "ckpt"
    run(
        configure(
            smoke_data,
            tmp_path,
            LAYER_SPEC=first_spec,
            CHECKPOINT_DIR=ckpt,
            JOB_SAMPLES=256,
            CKPT_FORMAT="portable",
            **SMALL,
        ),
        log_path=tmp_path / "p1.log",
        echo=False,
    )
    second = run(
        configure(smoke_data, tmp_path, LAYER_SPEC=second_spec, CHECKPOINT_DIR=ckpt, **SMALL),
        log_path=tmp_path / "p2.log",
        echo=False,
    )
    assert second.resumed_samples == 256 and second.samples == 768
    # Different kernels, same weights and optimizer state: the next step's loss agrees to bf16 rounding.
    first_after = second.train_losses[0]
    want = whole.train_losses[16]
    print(f"[{first_spec}->{second_spec}] loss after resume {first_after:.5f}, uninterrupted {want:.5f}")
    assert abs(first_after - want) / want < 5e-3
    # 32 further bf16 steps through other kernels drift as far as the two specs drift from each other
    # over the whole run, and no further: the uninterrupted run of the second spec sets the scale.
    other = run(
        configure(smoke_data, tmp_path, LAYER_SPEC=second_spec, **SMALL), log_path=tmp_path / "o.log", echo=False
    )
    spread = abs(other.eval_curve[-1][1] - whole.eval_curve[-1][1])
    drift = abs(second.eval_curve[-1][1] - whole.eval_curve[-1][1])
    print(f"[{first_spec}->{second_spec}] final eval drift {drift:.4f}, spread between the specs {spread:.4f}")
    assert drift <= max(2 * spread, 0.02)


def _engine(cfg, *, megatron: bool):
    from benchmark.engine import LocalEngine, MegatronEngine
    from benchmark.model import build_model
    from benchmark.train import seed_everything

    seed_everything(11, torch.device("cuda"))
    model, _ = build_model(cfg, 2048, bf16=False, use_cpu_initialization=True)
    model.cuda()
    if megatron:
        return MegatronEngine(cfg, model, bf16=False)
    return LocalEngine(cfg, model, torch.device("cuda"))


@pytest.mark.parametrize("spec", ["local", pytest.param("te", marks=needs_te)])
def test_norm_gains_get_no_weight_decay_on_gpu(smoke_data, tmp_path, spec):
    """Megatron's 1-D groups (wd_mult 0) carry weight decay 0, the matrices 0.1; one step moves a norm
    gain and a matrix the same way in the GPU engine and the CPU engine's update rule."""
    from benchmark.train import distributed

    cfg = configure(smoke_data, tmp_path, LAYER_SPEC=spec, PRECISION="fp32", FUSIONS="off", LR=1e-2)
    torch.backends.cuda.matmul.allow_tf32 = False
    x = torch.randint(0, 2048, (16, cfg.model.seq_length + 1), generator=torch.Generator().manual_seed(2))
    batch = [{"tokens": x[:8, :-1], "labels": x[:8, 1:]}, {"tokens": x[8:, :-1], "labels": x[8:, 1:]}]
    after = {}
    with distributed(cfg):
        for megatron in (True, False):
            engine = _engine(cfg, megatron=megatron)
            gpt = engine.gpt if megatron else engine.model
            if megatron:
                # The distributed optimizer holds flat fp32 shards (all 1-D), so the groups are told
                # apart by size: on one rank the no-decay group holds exactly the model's 1-D weights.
                groups = engine.optimizer.param_groups
                decay = {0.0: 0, 0.1: 0}
                for group in groups:
                    assert group["weight_decay"] == 0.1 * group["wd_mult"], group["wd_mult"]
                    decay[group["weight_decay"]] += sum(p.numel() for p in group["params"])
                one_d = sum(p.numel() for p in gpt.parameters() if p.ndim == 1)
                matrices = sum(p.numel() for p in gpt.parameters() if p.ndim > 1)
                assert decay == {0.0: one_d, 0.1: matrices}
            norm = next(p for n, p in gpt.named_parameters() if "layer_norm_weight" in n or "layernorm" in n)
            matrix = gpt.embedding.word_embeddings.weight
            before = (norm.detach().clone(), matrix.detach().clone())
            engine.train_step(batch, 1e-2)
            after[megatron] = (before, norm.detach().clone(), matrix.detach().clone())
    (n0, m0), n_meg, m_meg = after[True]
    _, n_loc, m_loc = after[False]
    torch.testing.assert_close(n_meg, n_loc, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m_meg, m_loc, rtol=1e-4, atol=1e-5)
    # a decayed norm gain would have moved by lr * wd * gain = 1e-3 more: far outside the tolerance
    assert (n_meg - n0).abs().max() > 1e-3
