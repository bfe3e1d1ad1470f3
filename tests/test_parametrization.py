"""The abc-rules in the model equal the abc-table of docs/paper.md, role by role, for SP, μP and u-μP.

Each test builds real models and reads back what they do (empirical init std of the weights,
the multiplier the layer applies, the LR the optimizer gives the tensor), and compares with the
table's formulas written out here independently of `parametrization.py`.
"""

import math

import pytest
import torch

from umup_repro.core.config import resolve_config
from umup_repro.model.decoder import Embedding, Linear, build_model
from umup_repro.model.optim import build_optimizer
from umup_repro.model.parametrization import residual_weights, umup_taus

ETA = 0.3
WIDTH, DEPTH, VOCAB, FFN = 512, 4, 1024, 2048
MUP_HP = {
    "sigma_init": 0.05,
    "alpha_emb": 3.0,
    "eta_emb": 2.0,
    "alpha_attn": 1.5,
    "alpha_out": 0.7,
    "base_width": 128,
    "base_depth": 2,
}


def make(parametrization, hp=None, width=WIDTH, depth=DEPTH, emb_lr_rule="default"):
    config = resolve_config(
        {
            "parametrization": parametrization,
            "hp": hp or {},
            "model": {"width": width, "depth": depth, "vocab_size": VOCAB},
            "train": {"lr": ETA, "weight_decay": 0.1, "emb_lr_rule": emb_lr_rule},
        }
    )
    torch.manual_seed(0)
    model = build_model(config)
    groups = {g["name"]: g for g in build_optimizer(model, config).param_groups}
    return model, groups


def observed(model, groups, name):
    """(empirical init std, multiplier, lr) of the parameter `name`."""
    module = model.get_submodule(name.removesuffix(".weight"))
    return float(module.weight.detach().std()), module.rule.multiplier, groups[name]["lr"]


def expect_close(got, want, std_rel=0.03):
    """Init std is empirical (≥ 256k samples: std of the estimate < 0.3%); the rest exact."""
    std, mult, lr = got
    w_std, w_mult, w_lr = want
    assert std == pytest.approx(w_std, rel=std_rel)
    assert mult == pytest.approx(w_mult, rel=1e-12)
    assert lr == pytest.approx(w_lr, rel=1e-12)


def test_embedding_rules():
    m, g = make("sp", {"sigma_init": 0.5})
    expect_close(observed(m, g, "embedding.weight"), (0.5, 1.0, ETA))
    m, g = make("mup", MUP_HP)
    expect_close(observed(m, g, "embedding.weight"), (0.05, 3.0, ETA * 2.0))
    m, g = make("umup")
    expect_close(observed(m, g, "embedding.weight"), (1.0, 1.0, ETA / math.sqrt(WIDTH)))


def test_embedding_lr_rule_ablation():
    """The paper's embedding-LR ablation: c_emb = 1 vs 1/√fan_out, nothing else changes."""
    m, g = make("umup", emb_lr_rule="constant")
    expect_close(observed(m, g, "embedding.weight"), (1.0, 1.0, ETA))
    m, g = make("mup", MUP_HP, emb_lr_rule="inv_sqrt_fan_out")
    expect_close(observed(m, g, "embedding.weight"), (0.05, 3.0, ETA * 2.0 / math.sqrt(WIDTH)))
    for p in ("umup", "mup"):
        default, swapped = make(p)[1], make(p, emb_lr_rule="constant" if p == "umup" else "inv_sqrt_fan_out")[1]
        others = [n for n in default if n != "embedding.weight"]
        assert [default[n]["lr"] for n in others] == [swapped[n]["lr"] for n in others]
    assert resolve_config({"parametrization": "umup"}).train.emb_lr_rule == "inv_sqrt_fan_out"
    assert resolve_config({"parametrization": "mup"}).train.emb_lr_rule == "constant"


@pytest.mark.parametrize(
    "name,fan_in",
    [
        ("blocks.1.attn.q_proj.weight", WIDTH),
        ("blocks.2.attn.out_proj.weight", WIDTH),
        ("blocks.3.ffn.up_proj.weight", WIDTH),
        ("blocks.0.ffn.down_proj.weight", FFN),
    ],
)
def test_hidden_rules(name, fan_in):
    m, g = make("sp", {"sigma_init": 0.5})
    expect_close(observed(m, g, name), (0.5 / math.sqrt(fan_in), 1.0, ETA))
    # μP: base fan-in is this tensor's fan-in in the base-width model; branches inside the
    # residual stack get LR × √(base_depth / depth).
    m, g = make("mup", MUP_HP)
    base_fan_in = fan_in * 128 / WIDTH
    expect_close(
        observed(m, g, name),
        (0.05 * math.sqrt(base_fan_in / fan_in), 1.0, ETA * base_fan_in / fan_in * math.sqrt(2 / DEPTH)),
    )
    # u-μP: unit init, 1/√fan_in multiplier and LR, LR × 1/√depth inside the residual stack.
    m, g = make("umup")
    expect_close(observed(m, g, name), (1.0, 1 / math.sqrt(fan_in), ETA / math.sqrt(fan_in) / math.sqrt(DEPTH)))


def test_readout_rules():
    m, g = make("sp", {"sigma_init": 0.5})
    expect_close(observed(m, g, "readout.weight"), (0.5 / math.sqrt(WIDTH), 1.0, ETA))
    m, g = make("mup", MUP_HP)
    expect_close(observed(m, g, "readout.weight"), (0.05, 0.7 * 128 / WIDTH, ETA))
    m, g = make("umup")
    expect_close(observed(m, g, "readout.weight"), (1.0, 1 / WIDTH, ETA))


@pytest.mark.parametrize("parametrization", ["sp", "mup", "umup", "umup_fp8"])
def test_norm_rules_no_trainable_norms_or_biases(parametrization):
    """Norms have no parameters and nothing has a bias: every parameter is a weight matrix of a
    Linear or Embedding layer, and every one of them is in the optimizer."""
    model, groups = make(parametrization, MUP_HP if parametrization == "mup" else None)
    names = [n for n, _ in model.named_parameters()]
    assert all(n.endswith(".weight") for n in names)
    for n in names:
        assert isinstance(model.get_submodule(n.removesuffix(".weight")), (Linear, Embedding))
    assert sorted(groups) == sorted(names)
    assert len(names) == 2 + 7 * DEPTH


@pytest.mark.parametrize("parametrization", ["sp", "mup", "umup"])
def test_independent_weight_decay(parametrization):
    """λ per step at the peak LR whatever the tensor's LR: lr·wd = λ in every group, and with zero
    gradients a step shrinks every weight by exactly (1 − λ) for any η."""
    hp = MUP_HP if parametrization == "mup" else None
    for eta in (1e-3, 0.5):
        config = resolve_config(
            {
                "parametrization": parametrization,
                "hp": hp or {},
                "model": {"width": 128, "depth": 2, "vocab_size": 256},
                "train": {"lr": eta, "weight_decay": 0.1},
            }
        )
        model = build_model(config)
        opt = build_optimizer(model, config)
        for group in opt.param_groups:
            assert group["lr"] * group["weight_decay"] == pytest.approx(0.1, rel=1e-12)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        for n, p in model.named_parameters():
            torch.testing.assert_close(p.detach(), before[n] * 0.9)


def test_depth_factors_scale_with_depth():
    """Doubling depth divides u-μP block LRs by √2 and leaves embedding/readout LRs alone."""
    m4, g4 = make("umup", depth=4)
    m8, g8 = make("umup", depth=8)
    name = "blocks.0.attn.q_proj.weight"
    assert g4[name]["lr"] / g8[name]["lr"] == pytest.approx(math.sqrt(2))
    for outside in ("embedding.weight", "readout.weight"):
        assert g4[outside]["lr"] == g8[outside]["lr"]


def test_residual_rule_taus_at_defaults():
    assert [round(t, 3) for t in umup_taus(2)] == [0.707, 0.577, 0.5, 0.447]


@pytest.mark.parametrize("alpha_res,ratio", [(1.0, 1.0), (2.0, 1.0), (1.0, 3.0), (0.5, 0.25)])
def test_residual_contributions_follow_alpha_res_and_ratio(alpha_res, ratio):
    """Unroll the stream: the final stream is c_emb·emb + Σ c_i·f_i. Total branch variance over
    embedding variance is 2·α_res², attention over FFN is α_res-attn-ratio², whatever the depth."""
    for depth in (2, 4, 8):
        weights = residual_weights("umup", depth, {"alpha_res": alpha_res, "alpha_res_attn_ratio": ratio})
        c_emb, c = 1.0, []
        for skip, branch in weights:
            c_emb, c = c_emb * skip, [x * skip for x in c] + [branch]
        attn, ffn = sum(x * x for x in c[0::2]), sum(x * x for x in c[1::2])
        assert (attn + ffn) / c_emb**2 == pytest.approx(2 * alpha_res**2, rel=1e-9)
        assert attn / ffn == pytest.approx(ratio**2, rel=1e-9)
        # and the stream keeps unit scale: each mix is a rotation-like (a² + b² = 1) combination
        assert all(s * s + b * b == pytest.approx(1.0) for s, b in weights)


def test_model_uses_the_residual_rule():
    model, _ = make("umup", {"alpha_res": 2.0, "alpha_res_attn_ratio": 0.5}, depth=2)
    want = residual_weights("umup", 2, {"alpha_res": 2.0, "alpha_res_attn_ratio": 0.5})
    got = [(b.attn_skip, b.attn_branch) for b in model.blocks] + [(b.ffn_skip, b.ffn_branch) for b in model.blocks]
    assert sorted(got) == sorted(want)
    mup, _ = make("mup", MUP_HP)
    assert all(b.attn_branch == pytest.approx(math.sqrt(2 / DEPTH)) for b in mup.blocks)


def test_attention_logit_scales():
    sp, _ = make("sp")
    mup, _ = make("mup", MUP_HP)
    umup, _ = make("umup", {"alpha_attn_softmax": 2.0})
    d_head = 64
    assert sp.blocks[0].attn.logit_scale == pytest.approx(1 / math.sqrt(d_head))
    assert mup.blocks[0].attn.logit_scale == pytest.approx(1.5 / d_head)
    assert umup.blocks[0].attn.logit_scale == pytest.approx(2.0 / d_head)
