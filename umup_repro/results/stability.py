"""The three training settings of the paper's Fig. 2, named from a cell's config.

Fig. 2 shows μP's LR transfer across width in three settings (docs/paper.md, "Stability fixes"):

- `tpv`: Tensor Programs V's kind of run: a constant LR after warmup over a small corpus seen for
  several epochs (`train.schedule: constant`, `data.train_tokens` set), where μP transfers well;
- `llama`: a standard Llama recipe: trainable RMSNorm gains and AdamW's decoupled weight decay
  (any departure from the two fixes), where the paper finds μP's transfer breaks down;
- `llama_fixes`: the same recipe with the paper's two stability fixes, non-parametric norms and
  independent weight decay, which restore it.

A cell's setting is read off its config (there is no `setting` key to set) so the sweep tables,
`transfer_summary.csv` (column `setting`) and the `stability_fixes` figure agree by construction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

SETTINGS = ("tpv", "llama", "llama_fixes")
SETTING_LABELS = {
    "tpv": "TP-V-like: constant LR, repeated data",
    "llama": "standard Llama: norm gains, AdamW decay",
    "llama_fixes": "Llama + fixes: no gains, independent decay",
}


def _set(value: Any) -> bool:
    """A config value that is present (not null/NaN in a table)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _true(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def setting_of(flat: Mapping[str, Any]) -> str:
    """The setting of a flattened config (a summary or a sweep-table row)."""
    if flat.get("train.schedule") == "constant" and _set(flat.get("data.train_tokens")):
        return "tpv"
    if _true(flat.get("model.norm_gains")) or flat.get("train.weight_decay_form", "independent") != "independent":
        return "llama"
    return "llama_fixes"


def with_setting(table):
    """The table (a pandas DataFrame) with a `setting` column. A sweep table's rows have their
    config: the setting is read off it. A transfer summary's rows have a `setting` column, or an
    older summary the setting inside the group label (`mup/llama`): the column where it is set,
    else the label's part; the group label loses that part either way (claims and figures group
    by parametrization)."""
    if "setting" not in table.columns and "group" not in table.columns:
        return table.assign(setting=[setting_of(row) for row in table.to_dict("records")])
    table = table.copy()
    if "group" in table.columns:
        parts = table["group"].astype(str).str.split("/")
        from_group = parts.map(lambda ps: next((p for p in ps if p in SETTINGS), None))
        table["group"] = parts.map(lambda ps: "/".join(p for p in ps if p not in SETTINGS))
        own = table["setting"] if "setting" in table.columns else from_group.map(lambda _: None)
        # (a list, not .map: on pandas' string dtype .map keeps the dtype and `&` refuses it)
        present = pd.Series([_set(v) and str(v) != "" for v in own], index=own.index, dtype=bool)
        table["setting"] = own.where(present, from_group)
    return table
