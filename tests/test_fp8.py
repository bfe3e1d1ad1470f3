"""FP8 casts: torch's rounding, saturation, and what it does to u-μP vs μP."""

import numpy as np
import pytest
import torch

from umup_repro.core.config import ConfigError, resolve_config
from umup_repro.model import fp8
from umup_repro.model.decoder import Linear, build_model


def reference_round(x: np.ndarray, mantissa_bits: int, min_normal_exp: int, max_value: float) -> np.ndarray:
    """Round-to-nearest-even onto the FP8 grid, saturating: written from the format's definition."""
    ax = np.abs(x)
    exp = np.floor(np.log2(np.where(ax > 0, ax, 1.0)))
    exp = np.maximum(exp, min_normal_exp)  # subnormals share the smallest normal's spacing
    step = 2.0 ** (exp - mantissa_bits)
    q = np.round(ax / step) * step  # numpy rounds half to even
    return np.sign(x) * np.minimum(q, max_value)


@pytest.mark.parametrize("fmt,mant,emin,vmax", [(fp8.E4M3, 3, -6, 448.0), (fp8.E5M2, 2, -14, 57344.0)])
def test_round_trip_matches_format_definition(fmt, mant, emin, vmax):
    gen = torch.Generator().manual_seed(0)
    # log-uniform magnitudes from far below the subnormals to far above the max, both signs
    mags = 2.0 ** (torch.rand(200_000, generator=gen, dtype=torch.float64) * 60 - 30)
    x = (mags * torch.sign(torch.randn(200_000, generator=gen, dtype=torch.float64))).float()
    got = fp8.round_trip(x, fmt).double().numpy()
    want = reference_round(x.double().numpy(), mant, emin, vmax)
    np.testing.assert_array_equal(got, want)


def test_saturation_limits():
    big = torch.tensor([1e9, -1e9, 500.0, 60000.0])
    assert fp8.round_trip(big, fp8.E4M3).tolist() == [448.0, -448.0, 448.0, 448.0]
    assert fp8.round_trip(big, fp8.E5M2).tolist() == [57344.0, -57344.0, 512.0, 57344.0]
    assert fp8.E4M3_MAX == 448.0 and fp8.E5M2_MAX == 57344.0


def test_in_range_equals_torch_own_cast():
    x = torch.randn(10_000) * 10
    for fmt in (fp8.E4M3, fp8.E5M2):
        torch.testing.assert_close(fp8.round_trip(x, fmt), x.to(fmt).float(), rtol=0, atol=0)


def test_which_matmuls_are_cast():
    """docs/paper.md, FP8 (`selective`): q/k/v and FFN up/gate inputs in FP8; attention-out, FFN-down,
    embedding, readout not."""
    model = build_model(resolve_config({"parametrization": "umup_fp8", "model": {"width": 128, "depth": 2}}))
    cast = sorted(n.split(".", 2)[-1] for n, m in model.named_modules() if isinstance(m, Linear) and m.use_fp8)
    assert set(cast) == {"attn.q_proj", "attn.k_proj", "attn.v_proj", "ffn.up_proj", "ffn.gate_proj"}
    assert not model.readout.use_fp8
    for block in model.blocks:
        assert not block.attn.out_proj.use_fp8 and not block.ffn.down_proj.use_fp8


def test_all_hidden_scheme_casts_every_block_matmul():
    """The proxy experiments' plain cast (Fig. 1c): all seven block matmuls; embedding/readout not."""
    config = {"parametrization": "umup_fp8", "model": {"width": 128, "depth": 2, "fp8_scheme": "all_hidden"}}
    model = build_model(resolve_config(config))
    cast = {n.split(".", 2)[-1] for n, m in model.named_modules() if isinstance(m, Linear) and m.use_fp8}
    assert cast == {f"attn.{p}_proj" for p in "qkv"} | {
        "attn.out_proj",
        "ffn.up_proj",
        "ffn.gate_proj",
        "ffn.down_proj",
    }
    assert not model.readout.use_fp8
    # FP8 off: the scheme changes nothing
    plain = build_model(resolve_config({"parametrization": "umup", "model": {"fp8_scheme": "all_hidden"}}))
    assert not any(m.use_fp8 for m in plain.modules() if isinstance(m, Linear))


def test_fp8_scheme_is_validated():
    with pytest.raises(ConfigError, match="fp8_scheme"):
        resolve_config({"model": {"fp8_scheme": "everything"}})


def test_umup_fp8_loss_at_init_matches_umup(real_batch):
    batch = real_batch(batch_size=8, seq_len=128)
    losses = {}
    for p in ("umup", "umup_fp8"):
        torch.manual_seed(0)
        model = build_model(resolve_config({"parametrization": p, "model": {"width": 256, "depth": 4, "seq_len": 128}}))
        with torch.no_grad():
            losses[p] = model.loss(batch).item()
    assert losses["umup_fp8"] == pytest.approx(losses["umup"], rel=0.01)


def underflow_fraction(parametrization, batch, width=1024):
    """Fraction of nonzero gradient entries entering the FP8 matmuls that E5M2 flushes to zero."""
    torch.manual_seed(0)
    config = resolve_config(
        {
            "parametrization": parametrization,
            "model": {"width": width, "depth": 2, "seq_len": batch.shape[1] - 1, "fp8": True},
        }
    )
    model = build_model(config)
    counts = []

    def hook(_m, _gin, gout):
        g = gout[0].detach()
        nonzero = g != 0
        counts.append((int((fp8.round_trip(g, fp8.E5M2)[nonzero] == 0).sum()), int(nonzero.sum())))

    for m in model.modules():
        if isinstance(m, Linear) and m.use_fp8:
            m.register_full_backward_hook(hook)
    model.loss(batch).backward()
    flushed, total = map(sum, zip(*counts))
    return flushed / total


def test_mup_gradients_underflow_in_fp8_umup_does_not(real_batch):
    """The paper: μP's gradients sit near 2^-20, below E5M2's smallest subnormal 2^-16."""
    batch = real_batch(batch_size=16, seq_len=256)
    mup = underflow_fraction("mup", batch)
    umup = underflow_fraction("umup_fp8", batch)
    print(f"E5M2 underflow at width 1024: muP {mup:.3f}, u-muP {umup:.5f}")
    assert mup > 0.5
    assert umup < 0.01
