"""AdamW with per-tensor LR factors and independent weight decay.

Each weight is its own parameter group with lr = η·c (c from the parametrization, depth factor
included). Weight decay is *independent* of the LR (docs/paper.md, "Proxy setup"): the group's decay is λ/lr, so
AdamW's step p ← p·(1 − lr·wd) shrinks by λ at the peak LR whatever η and c are, and follows the
LR schedule's shape (a scheduler multiplies lr, not lr·wd's λ).
"""

from __future__ import annotations

import torch

from umup_repro.config import RunConfig


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
