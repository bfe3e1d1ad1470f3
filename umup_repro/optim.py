"""AdamW with per-tensor LR factors and independent weight decay, and the LR schedule.

Each weight is its own parameter group with lr = η·c (c from the parametrization, depth factor
included). Weight decay is *independent* of the LR (docs/paper.md, "Proxy setup"): the group's decay is λ/lr, so
AdamW's step p ← p·(1 − lr·wd) shrinks by λ at the peak LR whatever η and c are, and follows the
LR schedule's shape (a scheduler multiplies lr, not lr·wd's λ).
"""

from __future__ import annotations

import math

import torch

from umup_repro.config import RunConfig, TrainConfig


def parameter_groups(model: torch.nn.Module, config: RunConfig) -> list[dict]:
    eta, lam = config.train.lr, config.train.weight_decay
    params = dict(model.named_parameters())
    groups = []
    for name, factor in model.lr_factors().items():
        lr = eta * factor
        groups.append({"params": [params[name]], "name": name, "lr": lr, "lr_factor": factor,
                       "weight_decay": lam / lr if lam else 0.0})
    return groups


def build_optimizer(model: torch.nn.Module, config: RunConfig) -> torch.optim.AdamW:
    t = config.train
    return torch.optim.AdamW(parameter_groups(model, config), betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps)


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
