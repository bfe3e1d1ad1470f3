"""`parametrization.csv` of a run folder: what each weight actually got, so a reader need not
re-derive the abc-rules (docs/paper.md, "The abc-table") to know how a run was parametrized.

One row per weight tensor: its role in the table, shape, the rule's init std (b) and the std the
draw actually has, forward multiplier (a), Adam LR factor (c, depth factor included) and the
effective peak LR η·c (the schedule's maximum). Read from the built model, so it shows what the
model does, not what the table says it should.
"""

from __future__ import annotations

import csv
import io

import torch

from umup_repro.core.config import RunConfig
from umup_repro.model.decoder import Embedding, Linear

COLUMNS = (
    "tensor",
    "role",
    "shape",
    "init_std",
    "init_std_measured",
    "multiplier",
    "lr_factor",
    "peak_lr",
    "trainable",
)


def _role(module: torch.nn.Module) -> str:
    if isinstance(module, Embedding):
        return "embedding"
    return "readout" if module.readout else "hidden"


def parametrization_rows(model: torch.nn.Module, config: RunConfig) -> list[dict]:
    """The rows of parametrization.csv for a freshly built model (measured std = the init draw)."""
    eta = config.train.lr
    assert eta is not None, "a resolved config (resolve_config fills train.lr)"
    rows = []
    for name, module in model.named_modules():
        if not isinstance(module, (Linear, Embedding)):
            continue
        rule, weight = module.rule, module.weight.detach()
        rows.append(
            {
                "tensor": f"{name}.weight",
                "role": _role(module),
                "shape": "x".join(str(n) for n in weight.shape),
                "init_std": rule.init_std,
                "init_std_measured": float(weight.float().std()),
                "multiplier": rule.multiplier,
                "lr_factor": rule.lr_factor,
                "peak_lr": eta * rule.lr_factor if rule.trainable else 0.0,
                "trainable": rule.trainable,
            }
        )
    return rows


def parametrization_csv(model: torch.nn.Module, config: RunConfig) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in parametrization_rows(model, config):
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return out.getvalue()
