"""u-μP keeps the true gradient direction of every parameter (the principle of umup_repro/model/ops.py).

The model's parameter gradients (custom backward scales) against plain autograd of the same
forward computation (tests/umup_reference.py: same weights, same batch, forward scales as plain
multiplications). Unit scaling may multiply each tensor's gradient by a constant, which Adam
ignores; it must not turn it. With one backward factor per op (the output's, for attention and
SwiGLU) and FFN up/down factors that cancel, each gradient is an exact constant multiple of the
true one, so in float64 the cosine is 1 up to rounding (~1e-15): we require 1 − 1e-9, which
leaves six orders of margin for rounding and still fails on any real departure (the separate
q/k/v and gate scales this replaced gave 0.80–0.83 for the embedding and 0.90–0.97 for block 0;
`test_the_check_detects_separate_attention_input_scales` shows the check catches that defect).

Real text (4 × 64 tokens of the offline corpus, vocab 4096), widths 64 and 128 (4 heads),
depths 1 and 3, with and without RoPE; u-μP-FP8 with its casts replaced by the identity
(`fp8.round_trip` monkeypatched), so the FP8 matmul code path runs in exact arithmetic.
"""

import pytest
import torch
from umup_reference import model_and_reference_grads, per_tensor_cosines, reference_loss

from umup_repro.core.config import resolve_config
from umup_repro.model import fp8, ops
from umup_repro.model.decoder import Linear, build_model

COS_TOL = 1e-9  # float64 rounding is ~1e-15; see the module docstring
SEQ_LEN = 64


@pytest.fixture(scope="module")
def batch(real_batch):
    return real_batch(batch_size=4, seq_len=SEQ_LEN)


def umup_model(parametrization="umup", width=64, depth=1, rope=False, seed=0):
    config = resolve_config(
        {
            "parametrization": parametrization,
            "model": {"width": width, "depth": depth, "heads": 4, "rope": rope, "seq_len": SEQ_LEN, "vocab_size": 4096},
        }
    )
    torch.manual_seed(seed)
    return build_model(config).double()


def assert_true_direction(model, batch):
    loss, ref, _, _ = model_and_reference_grads(model, batch)
    # the reference is the same function: equal losses (float64, different op order: ~1e-15)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=0)
    cosines = per_tensor_cosines(model, batch)
    assert set(cosines) == {name for name, _ in model.named_parameters()}
    bent = {name: cos for name, cos in cosines.items() if not cos >= 1 - COS_TOL}
    assert not bent, bent


@pytest.mark.parametrize("rope", [False, True], ids=["no_rope", "rope"])
@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("width", [64, 128])
def test_umup_gradients_keep_the_true_direction(width, depth, rope, batch):
    assert_true_direction(umup_model("umup", width, depth, rope), batch)


@pytest.mark.parametrize("rope", [False, True], ids=["no_rope", "rope"])
@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("width", [64, 128])
def test_umup_fp8_gradients_keep_the_true_direction(width, depth, rope, batch, monkeypatch):
    """FP8 code path with identity casts: its own scaling of the matmul gradients is exact too."""
    casts = []

    def identity_cast(x, fmt):
        casts.append(fmt)
        return x

    monkeypatch.setattr(fp8, "round_trip", identity_cast)
    model = umup_model("umup_fp8", width, depth, rope)
    assert any(m.use_fp8 for m in model.modules() if isinstance(m, Linear))
    assert_true_direction(model, batch)
    assert fp8.E5M2 in casts  # the FP8 backward ran (gradients are cast to E5M2)


def test_reference_follows_alpha_hyperparameters(batch):
    """Non-default α_ffn-act, α_attn-softmax, α_res, α_loss: the reference still is the model."""
    config = resolve_config(
        {
            "parametrization": "umup",
            "model": {"width": 64, "depth": 2, "heads": 4, "seq_len": SEQ_LEN},
            "hp": {
                "alpha_ffn_act": 2.0,
                "alpha_attn_softmax": 3.0,
                "alpha_res": 0.5,
                "alpha_res_attn_ratio": 2.0,
                "alpha_loss_softmax": 1.5,
            },
        }
    )
    torch.manual_seed(1)
    assert_true_direction(build_model(config).double(), batch)


def test_the_check_detects_separate_attention_input_scales(batch, monkeypatch):
    """Give q and k gradients 7× the output scale (the size of the old defect): the embedding and
    block-0 gradients leave the true direction, and the check sees it (measured: embedding 0.79,
    block-0 FFN up 0.92, as with the old ops)."""

    def skewed_attention(q, k, v, logit_scale):
        q, k = ops.scale(q, 1.0, 7.0), ops.scale(k, 1.0, 7.0)
        return original(q, k, v, logit_scale)

    original = ops.unit_attention
    monkeypatch.setattr(ops, "unit_attention", skewed_attention)
    model = umup_model("umup", 128, 2)
    torch.testing.assert_close(model.loss(batch), reference_loss(model, batch), rtol=1e-10, atol=0)
    cosines = per_tensor_cosines(model, batch)
    assert cosines["embedding.weight"] < 0.9 and cosines["blocks.0.ffn.up_proj.weight"] < 0.99
    assert cosines["readout.weight"] >= 1 - COS_TOL  # above the attention: untouched
