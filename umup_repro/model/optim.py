"""Adam(W) with per-tensor LR factors and three weight-decay forms, and the LR schedule.

Each weight is its own parameter group with lr = η·c (c from the parametrization, depth factor
included). `train.weight_decay_form` says what λ (`train.weight_decay`) does in one step
(docs/paper.md, "Stability fixes"):

- `independent` (default; the paper's fix, the library's `optim.scaled_parameters` with
  `independent_weight_decay=True`): the group's decay is λ/lr, so AdamW's p ← p·(1 − lr·wd) shrinks
  by λ at the peak LR whatever η and c are, and follows the LR schedule's shape (a scheduler
  multiplies lr, not λ);
- `decoupled` (torch's AdamW, the standard Llama recipe): p ← p·(1 − lr·λ), so the shrink scales
  with η and with each tensor's c, i.e. with width under μP;
- `coupled` (torch's Adam, L2): λ·p is added to the gradient and goes through Adam's moments.

Norm gains (`model.norm_gains`) are never decayed: decay would pull them toward 0, not their init 1
(the usual Llama practice; our choice, the paper does not say).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from umup_repro.core.config import RunConfig, TrainConfig

if TYPE_CHECKING:
    from umup_repro.model.decoder import Decoder


def _is_norm_gain(name: str) -> bool:
    return name.endswith("_norm.weight")


def parameter_groups(model: Decoder, config: RunConfig) -> list[dict]:
    eta, lam, form = config.train.lr, config.train.weight_decay, config.train.weight_decay_form
    assert eta is not None, "a resolved config (resolve_config fills train.lr)"
    params = dict(model.named_parameters())
    groups = []
    for name, factor in model.lr_factors().items():
        lr = eta * factor
        wd = 0.0 if not lam or _is_norm_gain(name) else (lam / lr if form == "independent" else lam)
        groups.append({"params": [params[name]], "name": name, "lr": lr, "lr_factor": factor, "weight_decay": wd})
    return groups


def build_optimizer(model: Decoder, config: RunConfig) -> torch.optim.Adam:
    """AdamW for the `independent` and `decoupled` forms, Adam (decay as L2 in the gradient) for `coupled`."""
    t = config.train
    optimizer = torch.optim.Adam if t.weight_decay_form == "coupled" else torch.optim.AdamW
    return optimizer(parameter_groups(model, config), betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps)


def lr_multiplier(step: int, t: TrainConfig) -> float:
    """Schedule factor at step `step`: linear warmup to 1 over `warmup` steps (step 0 gets
    1/warmup), then cosine from 1 to `final_lr_frac` at `steps`, or constant 1."""
    if step < t.warmup:
        return (step + 1) / t.warmup
    if t.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - t.warmup) / max(1, t.steps - t.warmup))
    return t.final_lr_frac + (1.0 - t.final_lr_frac) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, config: RunConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule, stepped once per optimizer update. LambdaLR multiplies each group's initial
    lr (η·factor) by `lr_multiplier`; weight decay is untouched."""
    t = config.train
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, t))
