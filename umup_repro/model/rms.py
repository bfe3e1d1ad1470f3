"""Per-tensor RMS of weights, activations and gradients: what the paper's RMS figures plot.

Activations are recorded by forward hooks on the model's `Tap` points and on every linear layer
and the embedding, so the names match the module tree (`blocks.0.attn.q_proj`, `blocks.0.ffn_resid`,
`readout` = the logits). Rows are long-format dicts: tensor, kind (weight/activation/grad), rms.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from umup_repro.model.decoder import Embedding, Linear, Tap


def rms(t: torch.Tensor) -> float:
    return float(t.detach().float().pow(2).mean().sqrt())


@contextlib.contextmanager
def record_activations(model: nn.Module, keep_tensors: bool = False) -> Iterator[dict]:
    """Within the block, every forward pass stores each watched activation's RMS by name
    (or, with keep_tensors, a detached copy of the activation itself)."""
    store: dict = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (Tap, Linear, Embedding)):

            def hook(_m, _inp, out, name=name):
                store[name] = out.detach().clone() if keep_tensors else rms(out)

            handles.append(module.register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def weight_rms(model: nn.Module) -> dict[str, float]:
    return {name: rms(p) for name, p in model.named_parameters()}


def grad_rms(model: nn.Module) -> dict[str, float]:
    return {name: rms(p.grad) for name, p in model.named_parameters() if p.grad is not None}


def rms_rows(activations: dict[str, float], model: nn.Module) -> list[dict]:
    """Long-format rows for one step: weights, the given activations and current gradients."""
    rows = [{"tensor": n, "kind": "weight", "rms": v} for n, v in weight_rms(model).items()]
    rows += [{"tensor": n, "kind": "activation", "rms": v} for n, v in activations.items()]
    rows += [{"tensor": n, "kind": "grad", "rms": v} for n, v in grad_rms(model).items()]
    return rows
