"""GPU-only checks: the real FP8 matmul (`torch._scaled_mm`) against the simulated casts, and
u-μP / μP with FP8 on the GPU. Skipped without CUDA; the FP8 tests also need FP8 tensor cores
(compute capability ≥ 8.9: Ada, Hopper and later).

Why the tolerances hold. Both paths round their operands onto the same FP8 grid (the same
saturating `fp8.cast`), and a product of two FP8 numbers (≤ 4 significant bits each) is exact in
fp32; so the paths differ only in how the products are summed. The simulated path sums in fp32;
Hopper's FP8 tensor cores add the products of each MMA into an accumulator that keeps only about
14 bits relative to the largest partial sum (DeepSeek-V3 report, §3.3.2; cuBLAS promotes to fp32
between MMAs, `use_fast_accum=False`). Measured on an H100 (K = 1024, unit Gaussian operands):
relative RMS difference 1.3e-4 (≈ 2^-13) in fp32 output and 6.8e-4 in bf16 output (one bf16
rounding, 2^-9 relative on average, adds to it); with a row of saturated entries (the test's),
2.2e-4–3.5e-4 (fp32) and 1.2e-3 (bf16), the largest element error 6.8e-4 ≈ 2^-10.5 of Σ|a||b|
in fp32. The bounds below: relative RMS 1e-3 (fp32) / 3e-3 (bf16), each element within
2^-8·Σ_k|a_ik||b_jk| (+ one bf16 ulp for bf16 outputs); a wrong layout, scale or format gives
O(1) errors. Through a model the loss at init
then agrees to ~1e-6 relative (measured 5e-7 fp32, 3e-6 bf16); training amplifies differences
slowly (Adam normalizes every update, so tiny gradient differences in near-zero coordinates
become O(lr) update differences): measured ≤ 3.3e-4 (fp32) and ≤ 9.5e-4 (bf16) relative over 20
steps, ≤ 5e-3 over 50, hence the looser trajectory tolerance.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from umup_repro.core.config import resolve_config
from umup_repro.model import fp8
from umup_repro.model.decoder import Linear, build_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def has_fp8_tensor_cores() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)


needs_fp8 = pytest.mark.skipif(not has_fp8_tensor_cores(), reason="needs FP8 tensor cores (capability >= 8.9)")


@contextlib.contextmanager
def simulated_fp8():
    """Force the simulated path (round trips + matmul in the input dtype) on the GPU too."""
    real = fp8.real_fp8_available
    fp8.real_fp8_available = lambda *tensors: False
    try:
        yield
    finally:
        fp8.real_fp8_available = real


@contextlib.contextmanager
def count_scaled_mm():
    """Count the calls of torch._scaled_mm (the real path) made in the block."""
    calls = []
    original = torch._scaled_mm

    def spy(*args, **kwargs):
        calls.append(args[0].dtype)
        return original(*args, **kwargs)

    torch._scaled_mm = spy
    try:
        yield calls
    finally:
        torch._scaled_mm = original


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).pow(2).mean().sqrt() / b.float().pow(2).mean().sqrt())


# --------------------------------------------------------------------------------------------
# One matmul


@needs_fp8
@pytest.mark.parametrize("fmt_a,fmt_b", [(fp8.E4M3, fp8.E4M3), (fp8.E5M2, fp8.E4M3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_real_matmul_matches_simulated(fmt_a, fmt_b, dtype):
    gen = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(512, 1024, device="cuda", generator=gen).to(dtype)
    b_t = torch.randn(768, 1024, device="cuda", generator=gen).to(dtype)
    a[0, :8] = 1e4  # out of range for both formats: the saturating cast clamps, in both paths
    with count_scaled_mm() as calls:
        real = fp8.fp8_matmul(a, b_t, fmt_a, fmt_b)
    assert calls == [fmt_a], "the real path was not taken"
    with simulated_fp8():
        sim = fp8.fp8_matmul(a, b_t, fmt_a, fmt_b)
    assert real.dtype == sim.dtype == dtype and real.shape == sim.shape == (512, 768)
    assert torch.isfinite(real).all()
    scale = fp8.cast(a, fmt_a).float().abs() @ fp8.cast(b_t, fmt_b).float().abs().t()  # Σ_k |a_ik||b_jk|
    err = (real.float() - sim.float()).abs()
    bound = scale * 2.0**-8
    if dtype == torch.bfloat16:
        bound += sim.float().abs() * 2.0**-7
    print(
        f"\n{dtype} {fmt_a} x {fmt_b}: rel rms {rel_rms(real, sim):.2e}, max err / sum|a||b| "
        f"{float((err / scale).max()):.2e}"
    )
    assert rel_rms(real, sim) < (1e-3 if dtype == torch.float32 else 3e-3)
    assert (err <= bound).all()


@needs_fp8
def test_real_path_covers_forward_and_backward():
    """Every FP8 linear takes the real path for its forward and both backward matmuls."""
    config = resolve_config({"parametrization": "umup_fp8", "model": {"width": 256, "depth": 2, "seq_len": 128}})
    torch.manual_seed(0)
    model = build_model(config).cuda()
    n_fp8 = sum(isinstance(m, Linear) and m.use_fp8 for m in model.modules())
    batch = torch.randint(0, config.model.vocab_size, (8, 129), device="cuda")
    with count_scaled_mm() as calls:
        model.loss(batch).backward()
    assert len(calls) == 3 * n_fp8  # forward (E4M3 x E4M3), grad_x and grad_w (E5M2 x E4M3)
    assert calls.count(fp8.E4M3) == n_fp8 and calls.count(fp8.E5M2) == 2 * n_fp8
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Whole model: real vs simulated, loss at init and along a short training run


def train_losses(
    parametrization: str,
    *,
    steps: int,
    simulated: bool = False,
    precision: str = "32",
    width: int = 256,
    depth: int = 2,
    batch_size: int = 8,
    seq_len: int = 128,
    fp8_casts: bool = False,
    tokens=None,
) -> list[float]:
    """Training losses of `steps` AdamW steps (loss t is measured before update t), on the GPU,
    the run's own optimizer, LR and schedule, real text. `simulated` forces the simulated casts."""
    from umup_repro.data import token_arrays, train_batch
    from umup_repro.model.optim import build_optimizer, build_scheduler

    config = resolve_config(
        {
            "parametrization": parametrization,
            "model": {"width": width, "depth": depth, "seq_len": seq_len, "fp8": fp8_casts},
            "train": {"steps": steps, "batch_size": batch_size, "warmup": 5, "precision": precision},
        }
    )
    t = config.train
    if tokens is None:
        tokens = token_arrays(config)["train"]
    torch.manual_seed(t.seed)
    model = build_model(config).cuda()
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    bf16 = precision == "bf16-mixed"
    losses = []
    with simulated_fp8() if simulated else contextlib.nullcontext():
        for step in range(steps):
            batch = train_batch(tokens, seed=t.seed, step=step, batch_size=batch_size, seq_len=seq_len).cuda()
            with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
                loss = model.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
    return losses


@needs_fp8
@pytest.mark.parametrize("precision,init_tol,train_tol", [("32", 1e-5, 2e-3), ("bf16-mixed", 1e-4, 5e-3)])
def test_umup_fp8_real_matches_simulated(precision, init_tol, train_tol):
    """u-μP-FP8 with `torch._scaled_mm` follows the simulated casts: same loss at init (to the
    summation-order / bf16-rounding level) and over 20 training steps (relative tolerance)."""
    real = train_losses("umup_fp8", steps=20, precision=precision)
    sim = train_losses("umup_fp8", steps=20, precision=precision, simulated=True)
    high = train_losses("umup", steps=20, precision=precision)  # no FP8 casts at all
    print(
        f"\nu-muP-FP8 {precision}: real {real[0]:.6f} -> {real[-1]:.6f}, simulated {sim[0]:.6f} -> "
        f"{sim[-1]:.6f}, no FP8 {high[0]:.6f} -> {high[-1]:.6f}; max rel diff real/sim "
        f"{max(abs(r - s) / s for r, s in zip(real, sim)):.2e}"
    )
    assert all(math.isfinite(x) for x in real)
    assert real[0] == pytest.approx(sim[0], rel=init_tol)
    for r, s in zip(real, sim):
        assert r == pytest.approx(s, rel=train_tol)
    assert real[-1] < real[0] - 0.5  # it trains
    assert real[-1] == pytest.approx(high[-1], rel=0.02)  # and FP8 costs u-μP almost nothing


@pytest.mark.parametrize("parametrization", ["umup", "sp"])
def test_gpu_gradients_match_cpu_float64(parametrization):
    """Eager on the GPU (fp32; SDPA picks its CUDA kernels) gives the gradients of a float64 CPU
    reference to fp32 precision (measured ≤ 1.1e-6 relative on an H100; 1.2e-2 in bf16 autocast)."""
    import copy

    config = resolve_config({"parametrization": parametrization, "model": {"width": 256, "depth": 2, "seq_len": 128}})
    torch.manual_seed(0)
    ref_model = build_model(config).double()
    batch = torch.randint(0, config.model.vocab_size, (4, 129), generator=torch.Generator().manual_seed(1))
    ref_model.loss(batch).backward()
    model = copy.deepcopy(ref_model).float().cuda()
    model.zero_grad(set_to_none=True)
    model.loss(batch.cuda()).backward()
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
        err = float((p.grad.double().cpu() - q.grad).norm() / q.grad.norm())
        assert err < 1e-4, name


@needs_fp8
@pytest.mark.xfail(
    strict=False,
    reason=(
        "torch 2.11 + CUDA: compiled u-muP in bf16 autocast gives wrong q/k-projection gradients "
        "(relative error ~1.5, loss right); also without FP8 and with aot_eager; fp32, eager and SP are right"
    ),
)
def test_compiled_real_fp8_matches_eager():
    """The benchmark can compile the step: the compiled u-μP-FP8 loss and gradients should match
    eager (bf16: Inductor fuses ops and keeps some intermediates in fp32, hence 5e-2)."""
    config = resolve_config({"parametrization": "umup_fp8", "model": {"width": 256, "depth": 2, "seq_len": 128}})
    torch.manual_seed(0)
    model = build_model(config).cuda()
    batch = torch.randint(0, config.model.vocab_size, (8, 129), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager = model.loss(batch)
    eager.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        compiled = torch.compile(model.loss)(batch)
    compiled.backward()
    assert compiled.item() == pytest.approx(eager.item(), rel=1e-3)
    worst = max(rel_rms(p.grad, g) for g, p in zip(grads, model.parameters()))
    print(f"\ncompiled vs eager u-muP-FP8 gradients: worst relative RMS difference {worst:.2e}")
    assert worst < 5e-2


# --------------------------------------------------------------------------------------------
# μP with the same casts underflows (the paper's motivation), u-μP does not


def e5m2_underflow(parametrization: str, batch: torch.Tensor, width: int = 1024) -> float:
    """Fraction of nonzero gradient entries entering the FP8 matmuls that E5M2 flushes to zero,
    on the GPU with the real path in use."""
    torch.manual_seed(0)
    config = resolve_config(
        {
            "parametrization": parametrization,
            "model": {"width": width, "depth": 2, "seq_len": batch.shape[1] - 1, "fp8": True},
        }
    )
    model = build_model(config).cuda()
    counts = []

    def hook(_m, _gin, gout):
        g = gout[0].detach()
        nonzero = g != 0
        counts.append((int((fp8.round_trip(g, fp8.E5M2)[nonzero] == 0).sum()), int(nonzero.sum())))

    for m in model.modules():
        if isinstance(m, Linear) and m.use_fp8:
            m.register_full_backward_hook(hook)
    with count_scaled_mm() as calls:
        model.loss(batch.cuda()).backward()
    assert calls, "the real path was not taken"
    flushed, total = map(sum, zip(*counts))
    return flushed / total


@needs_fp8
def test_mup_gradients_underflow_on_gpu(real_batch):
    batch = real_batch(batch_size=16, seq_len=256)
    mup, umup = e5m2_underflow("mup", batch), e5m2_underflow("umup_fp8", batch)
    print(f"\nE5M2 underflow at width 1024 (GPU, real FP8 matmuls): muP {mup:.3f}, u-muP {umup:.5f}")
    assert mup > 0.5
    assert umup < 0.01
