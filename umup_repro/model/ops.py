"""Unit-scaled ops: each has a forward scale and backward scales (custom autograd).

Unit scaling (Blake et al. 2023) picks each op's scales so that, for unit-scale inputs and a
unit-scale incoming gradient, its output and each outgoing gradient have unit scale too.

The principle every op here keeps (tested in tests/test_gradient_direction.py): **an op may
rescale its output and its gradients, but every parameter's gradient keeps the direction of the
true gradient of the loss.** Adam is invariant to a constant factor on one tensor's gradient, so
constant factors are free; what is not free is giving two inputs of one op *different* factors
relative to the chain rule, because their gradients are later summed (q, k and v all come from
the same residual stream) and the sum then points elsewhere. Hence, as in the authors' library
(`unit_scaling.constraints.to_output_scale`, used by `functional.scaled_dot_product_attention`
and `functional.silu_glu`), an op with several activation inputs scales all their gradients by
one factor, equal to its output scale. A linear layer may give its input gradient a scale other
than its output scale (1/√fan_out vs 1/√fan_in) only where the factors cancel along every path:
FFN up/gate (√(d/f)) and down (√(f/d)) mirror each other, as the library's `MLP` notes.

The scales are derived here, not copied:
- matmuls: sums of fan_in (forward), fan_out (input gradient) or batch (weight gradient) unit
  terms, hence 1/√fan; the readout keeps μP's 1/fan_in forward scale (logits ≈ 1/√width);
- SwiGLU: the exact Gaussian output moment by Gauss-Hermite quadrature, as a function of
  α_ffn-act (the library fits it by a logarithmic interpolation instead); both input gradients
  take the output scale;
- causal attention: the output moment of a causal softmax over Gaussian logits, fitted once by a
  seeded Monte Carlo run per (seq_len, d_head, logit scale) (the library interpolates between
  √(ln S / S) and 1 in the logit scale); q, k and v gradients take the output scale;
- cross-entropy: at init the softmax is uniform, so each logit gradient has RMS √(V−1)/V.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from umup_repro.model import fp8

# ---------------------------------------------------------------------------------------------
# Scaling a tensor's value and its gradient separately


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fwd: float, bwd: float):
        ctx.bwd = bwd
        return x * fwd if fwd != 1.0 else x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.bwd, None, None


def scale(x: torch.Tensor, fwd: float = 1.0, bwd: float = 1.0) -> torch.Tensor:
    """x·fwd in the forward pass; the incoming gradient times bwd in the backward pass."""
    return _ScaleGrad.apply(x, float(fwd), float(bwd))


# ---------------------------------------------------------------------------------------------
# Matmuls (linear and readout), optionally with FP8 inputs


class _ScaledMatmul(torch.autograd.Function):
    """y = fwd · x Wᵀ; ∂x = bwd_x · g W; ∂W = bwd_w · gᵀ x; FP8 casts on all matmul inputs."""

    @staticmethod
    def forward(ctx, x, w, fwd: float, bwd_x: float, bwd_w: float, use_fp8: bool):
        ctx.save_for_backward(x, w)
        ctx.scales = (bwd_x, bwd_w, use_fp8)
        if use_fp8:  # cast the unit-scale operands, scale the product afterwards
            return fp8.fp8_matmul(x, w, fp8.E4M3, fp8.E4M3) * fwd
        return x @ (w * fwd).t()  # scale the (smaller) weight, not the activation-sized output

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        bwd_x, bwd_w, use_fp8 = ctx.scales
        g = g.to(x.dtype)
        if use_fp8:
            grad_x = fp8.fp8_matmul(g, w.t(), fp8.E5M2, fp8.E4M3) * bwd_x
            grad_w = fp8.fp8_matmul(g.t(), x.t(), fp8.E5M2, fp8.E4M3)
        else:
            grad_x = g @ (w * bwd_x)
            grad_w = g.t() @ x
        return grad_x, grad_w.mul_(bwd_w).to(w.dtype), None, None, None, None


def scaled_matmul(
    x: torch.Tensor, w: torch.Tensor, fwd: float, bwd_x: float, bwd_w: float | None, use_fp8: bool = False
) -> torch.Tensor:
    """Apply a linear map to the last dim of x. `bwd_w=None` means 1/√(tokens in the batch)."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if bwd_w is None:
        bwd_w = 1 / math.sqrt(x2.shape[0])
    device = x2.device.type
    if torch.is_autocast_enabled(device):  # autocast does not reach custom Functions: apply it here
        dtype = torch.get_autocast_dtype(device)
        x2, w = x2.to(dtype), w.to(dtype)
    elif w.dtype != x2.dtype:
        w = w.to(x2.dtype)
    y = _ScaledMatmul.apply(x2, w, float(fwd), float(bwd_x), float(bwd_w), bool(use_fp8))
    return y.reshape(*lead, w.shape[0])


def unit_linear(x: torch.Tensor, w: torch.Tensor, use_fp8: bool = False) -> torch.Tensor:
    """Unit-scaled hidden linear: forward 1/√fan_in, input grad 1/√fan_out, weight grad 1/√batch."""
    fan_out, fan_in = w.shape
    return scaled_matmul(x, w, 1 / math.sqrt(fan_in), 1 / math.sqrt(fan_out), None, use_fp8)


def unit_readout(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Unit-scaled readout: forward 1/fan_in (μP's rule), input grad 1/√fan_out, weight 1/√batch."""
    fan_out, fan_in = w.shape
    return scaled_matmul(x, w, 1 / fan_in, 1 / math.sqrt(fan_out), None)


def unit_embedding(ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Embedding lookup; each row's gradient sums ~N/V unit terms, so scale it by √(V/N)."""
    vocab = table.shape[0]
    return F.embedding(ids, scale(table, 1.0, math.sqrt(vocab / ids.numel())))


# ---------------------------------------------------------------------------------------------
# Residual connections


class _ResidualSplit(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, skip_weight: float, branch_weight: float):
        ctx.weights = (skip_weight, branch_weight)
        return x.view_as(x), x.view_as(x)

    @staticmethod
    def backward(ctx, g_branch, g_skip):
        skip_weight, branch_weight = ctx.weights
        return torch.add(g_skip * skip_weight, g_branch, alpha=branch_weight), None, None


class _ResidualAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, branch_out, skip, skip_weight: float, branch_weight: float):
        return torch.add(skip * skip_weight, branch_out, alpha=branch_weight)

    @staticmethod
    def backward(ctx, g):
        return g, g, None, None


def residual_split(x: torch.Tensor, skip_weight: float, branch_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Identity into (branch input, skip); the backward recombines the two gradients with the
    residual weights, so ∂x is the true gradient while the branch sees an unscaled one."""
    return _ResidualSplit.apply(x, float(skip_weight), float(branch_weight))


def residual_add(
    branch_out: torch.Tensor, skip: torch.Tensor, skip_weight: float, branch_weight: float
) -> torch.Tensor:
    """skip_weight·skip + branch_weight·branch_out; both get the incoming gradient unscaled."""
    return _ResidualAdd.apply(branch_out, skip, float(skip_weight), float(branch_weight))


# ---------------------------------------------------------------------------------------------
# SwiGLU with α_ffn-act


def _silu(z: np.ndarray) -> np.ndarray:
    return z / (1 + np.exp(-z))


def _silu_grad(z: np.ndarray) -> np.ndarray:
    s = 1 / (1 + np.exp(-z))
    return s * (1 + z * (1 - s))


@functools.cache
def swiglu_scales(alpha: float) -> tuple[float, float]:
    """(forward scale, gate-gradient RMS at that scale) for y = u · silu(α·v), u, v ~ N(0, 1).

    E[y²] = E[silu(αz)²], so the forward scale is 1/√E[silu(αz)²]; the input u's gradient
    g·silu(αv)·fwd is then unit. The gate's gradient takes the same factor (chain rule, see the
    module docstring), so its RMS is fwd·α·√E[silu'(αz)²]: 1.03 at α = 1, 1.01 at α = 1/4 and
    1.02 at α = 4 — near unit, and a true gradient direction. 80-point Gauss-Hermite: exact to
    ~1e-12.
    """
    z, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    fwd = 1 / math.sqrt(float(np.sum(w * _silu(alpha * z) ** 2)))
    gate_rms = fwd * math.sqrt(float(np.sum(w * (alpha * _silu_grad(alpha * z)) ** 2)))
    return fwd, gate_rms


class _UnitSwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, v, alpha: float):
        fwd, _ = swiglu_scales(alpha)
        ctx.save_for_backward(u, v)
        ctx.consts = (alpha, fwd)
        av = v * alpha if alpha != 1.0 else v
        return F.silu(av).mul_(u).mul_(fwd)

    @staticmethod
    def backward(ctx, g):
        u, v = ctx.saved_tensors
        alpha, fwd = ctx.consts
        av = v * alpha if alpha != 1.0 else v
        sig = torch.sigmoid(av)
        grad_u = (av * sig).mul_(g).mul_(fwd)
        # the chain rule, exactly: one factor (the output scale) for both inputs
        silu_grad = (1 - sig).mul_(av).add_(1).mul_(sig)
        grad_v = silu_grad.mul_(g).mul_(u).mul_(alpha * fwd)
        return grad_u, grad_v, None


def unit_swiglu(u: torch.Tensor, v: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Unit-scaled u · silu(α·v): α changes the nonlinearity's shape, never the output scale.

    Backward: the true gradient times the output scale for both u and v (the authors'
    `silu_glu` does the same with its fitted scale)."""
    return _UnitSwiGLU.apply(u, v, float(alpha))


def swiglu(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain SwiGLU, for SP and μP."""
    return u * F.silu(v)


# ---------------------------------------------------------------------------------------------
# Causal attention with α_attn-softmax


@functools.cache
def attention_scale(seq_len: int, d_head: int, logit_scale: float) -> float:
    """Output scale of causal softmax attention on unit Gaussian q, k, v: 1/RMS(out).

    No closed form (the causal mask makes each query average a different number of keys), so
    the moment is measured once by a seeded Monte Carlo run: 64 head-samples, which pins it to
    about 1% (the RMS averages 64·seq_len·d_head terms). Deliberate departure from the authors'
    `scaled_dot_product_attention`, whose closed-form fit (√(ln S/S) at small logit scales) is
    within ~10% of this measurement at our shapes (tests/test_parity_unit_scaling.py).
    """
    gen = torch.Generator().manual_seed(1234)
    shape = (64, seq_len, d_head)
    q, k, v = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(3))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=logit_scale)
    return float(1 / out.pow(2).mean().sqrt())


def unit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """Causal attention (q, k, v: batch, heads, seq, d_head) with a unit-scale output.

    One scale, the output's, multiplies the output and the q, k and v gradients alike (the
    authors' `to_output_scale` rule, unit_scaling `functional.scaled_dot_product_attention`;
    Aleph-Alpha `scaling`'s u-μP attention does the same). Separate per-input scales would give
    unit q/k gradients but feed ≈7× too much q/k gradient into the residual stream, turning the
    gradient of every tensor below the op away from the true gradient. With one scale, q/k
    gradients at init sit below 1 (≈ 0.1 at α_attn-softmax = 1, ≈ 0.6 at 4; S = 64…256), far
    inside FP8's range; v's gradient and the output are unit.
    """
    s = attention_scale(q.shape[-2], q.shape[-1], float(logit_scale))
    q, k, v = (scale(t, 1.0, s) for t in (q, k, v))
    return scale(F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=logit_scale), s, 1.0)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """Plain causal attention, for SP and μP."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=logit_scale)


# ---------------------------------------------------------------------------------------------
# Softmax cross-entropy with α_loss-softmax


class _UnitCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, alpha: float):
        logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) * alpha, dim=-1)
        ctx.save_for_backward(logp, targets)
        ctx.logits_dtype = logits.dtype
        return F.nll_loss(logp, targets)

    @staticmethod
    def backward(ctx, g):
        logp, targets = ctx.saved_tensors
        vocab = logp.shape[-1]
        grad = logp.exp()
        grad[torch.arange(len(targets), device=grad.device), targets] -= 1
        # gradient of the *summed* loss, scaled to unit RMS at a uniform softmax
        grad.mul_(g * (vocab / math.sqrt(vocab - 1)))
        return grad.to(ctx.logits_dtype), None, None


def unit_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy of softmax(α·logits) (reported), with unit-scale logit gradients."""
    return _UnitCrossEntropy.apply(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), float(alpha))
