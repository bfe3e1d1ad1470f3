"""The u-μP Decoder's forward recomputed with plain differentiable torch ops, as a gradient oracle.

Every forward scale of the model (1/√fan_in matmuls, the 1/fan_in readout, the residual weights,
SwiGLU's and attention's output scales, α_loss) is a plain multiplication here and nothing has a
custom backward, so autograd of `reference_loss` is the true gradient of the very loss the model
reports. `per_tensor_cosines` compares the model's own (unit-scaled) parameter gradients with it:
a unit-scaled op may multiply a tensor's gradient by a constant (Adam ignores that), never turn
it, so every cosine must be 1.

Scales are looked up in `umup_repro.model.ops` at call time (`ops.attention_scale`, `ops.swiglu_scales`),
so a script can point this oracle at another version of the ops by patching those two names.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from umup_repro.model import ops
from umup_repro.model.decoder import Decoder, rms_norm


def _linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x @ w.t() / math.sqrt(w.shape[1])


def _attention(attn, x: torch.Tensor, w: dict, prefix: str) -> torch.Tensor:
    b, s, d = x.shape

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(b, s, attn.heads, attn.d_head).transpose(1, 2)

    q, k, v = (heads(_linear(x, w[f"{prefix}{name}_proj.weight"])) for name in "qkv")
    if attn.rotary is not None:
        q, k = attn.rotary(q), attn.rotary(k)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attn.logit_scale)
    out = out * ops.attention_scale(s, attn.d_head, float(attn.logit_scale))
    return _linear(out.transpose(1, 2).reshape(b, s, d), w[f"{prefix}out_proj.weight"])


def _ffn(ffn, x: torch.Tensor, w: dict, prefix: str) -> torch.Tensor:
    u, v = _linear(x, w[f"{prefix}up_proj.weight"]), _linear(x, w[f"{prefix}gate_proj.weight"])
    h = u * F.silu(ffn.alpha * v) * ops.swiglu_scales(float(ffn.alpha))[0]
    return _linear(h, w[f"{prefix}down_proj.weight"])


def reference_loss(model: Decoder, batch: torch.Tensor, weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The loss `model.loss(batch)` computes, from `weights` (default: the model's own), in plain ops."""
    assert model.unit, "the reference recomputes the u-μP forward only"
    w = dict(model.named_parameters()) if weights is None else weights
    ids, targets = batch[:, :-1], batch[:, 1:]
    x = F.embedding(ids, w["embedding.weight"])
    for i, block in enumerate(model.blocks):
        x = block.attn_skip * x + block.attn_branch * _attention(block.attn, rms_norm(x), w, f"blocks.{i}.attn.")
        x = block.ffn_skip * x + block.ffn_branch * _ffn(block.ffn, rms_norm(x), w, f"blocks.{i}.ffn.")
    readout = w["readout.weight"]
    logits = rms_norm(x) @ readout.t() / readout.shape[1]
    return F.cross_entropy(model.alpha_loss * logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def model_and_reference_grads(model: Decoder, batch: torch.Tensor):
    """(model loss, reference loss, {name: model grad}, {name: reference grad}) at the same weights."""
    model.zero_grad(set_to_none=True)
    loss = model.loss(batch)
    loss.backward()
    leaves = {name: p.detach().clone().requires_grad_() for name, p in model.named_parameters()}
    ref = reference_loss(model, batch, leaves)
    ref_grads = torch.autograd.grad(ref, list(leaves.values()))
    ours = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    return loss.detach(), ref.detach(), ours, dict(zip(leaves, ref_grads))


def per_tensor_cosines(model: Decoder, batch: torch.Tensor) -> dict[str, float]:
    """{parameter name: cosine(model's gradient, true gradient of the same loss)}."""
    _, _, ours, ref = model_and_reference_grads(model, batch)
    return {name: float(F.cosine_similarity(ours[name].flatten(), ref[name].flatten(), dim=0)) for name in ours}
