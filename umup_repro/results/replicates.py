"""Seed replicates (a sweep's or block's `seeds: N`): their key, their statistics, and how sure
an optimum is.

Replicates are cells whose configs differ only in `train.seed`. A replicate group's loss is the
mean over its replicates, with the standard error (std with ddof 1 / √n; NaN for n = 1) and n.
A group any replicate of which diverged (or has no loss) counts as diverged, as in the staged
search's rule (umup_repro/sweeps/search_stage.py). How sure an optimum is: the share of bootstrap resamples
(each value's replicates drawn with replacement, 1000 times, seeded) whose argmin is that
optimum; 1.0 when every value has a single replicate (no noise is measured, none is claimed).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np
import pandas as pd

from umup_repro.sweeps.grid import Cell

LOSS = "final_val_loss"
BOOTSTRAP = 1000
REPLICATE_COLUMNS = ["replicate", "loss_mean", "loss_se", "seeds_n"]


def replicate_key(cell: Cell) -> str:
    """A hash of the cell's config without `train.seed`: equal for the replicates of one point."""
    d = cell.config_dict
    d["train"] = {k: v for k, v in d["train"].items() if k != "seed"}
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def _losses(rows: pd.DataFrame) -> np.ndarray:
    """Each row's loss; inf where the run diverged or has none."""
    loss = pd.to_numeric(rows[LOSS], errors="coerce").to_numpy(dtype=float)
    return np.where(rows["diverged"].astype(bool).to_numpy() | np.isnan(loss), np.inf, loss)


def stats(losses: np.ndarray) -> tuple[float, float, int]:
    """(mean, standard error, n) of one group's replicate losses (inf in → mean inf)."""
    n = len(losses)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(np.mean(losses)) if np.all(np.isfinite(losses)) else math.inf
    se = float(np.std(losses, ddof=1) / math.sqrt(n)) if n > 1 and math.isfinite(mean) else math.nan
    return mean, se, n


def add_replicate_columns(table: pd.DataFrame, cells: list[Cell]) -> pd.DataFrame:
    """The sweep table with `replicate, loss_mean, loss_se, seeds_n` per row (its group's values;
    loss_mean is NaN for a diverged group)."""
    key = {c.id: replicate_key(c) for c in cells}
    table = table.copy()
    table["replicate"] = table["cell"].map(key)
    unique = table.drop_duplicates("cell")
    per_group = {}
    for rep, g in unique.groupby("replicate", sort=False):
        mean, se, n = stats(_losses(g))
        per_group[rep] = (mean if math.isfinite(mean) else math.nan, se, n)
    table["loss_mean"] = table["replicate"].map(lambda r: per_group[r][0])
    table["loss_se"] = table["replicate"].map(lambda r: per_group[r][1])
    table["seeds_n"] = table["replicate"].map(lambda r: per_group[r][2])
    return table


def by_value(rows: pd.DataFrame, column: str) -> dict[Any, np.ndarray]:
    """{value of `column`: its replicates' losses (inf: diverged)} over distinct cells."""
    rows = rows.drop_duplicates("cell") if "cell" in rows else rows
    losses = _losses(rows)
    out: dict[Any, list] = {}
    for value, loss in zip(rows[column].tolist(), losses):
        out.setdefault(value, []).append(loss)
    return {v: np.asarray(ls) for v, ls in out.items()}


def optimum_share(groups: dict[Any, np.ndarray], optimum: Any, seed: int = 0) -> float:
    """Share of bootstrap resamples whose lowest mean loss is at `optimum` (NaN without one)."""
    if optimum is None or optimum not in groups:
        return math.nan
    values = list(groups)
    rng = np.random.default_rng(seed)
    means = np.empty((BOOTSTRAP, len(values)))
    for j, v in enumerate(values):
        x = groups[v]
        draws = x[rng.integers(len(x), size=(BOOTSTRAP, len(x)))]
        means[:, j] = draws.mean(axis=1)  # inf when a diverged replicate is drawn
    finite = np.isfinite(means).any(axis=1)
    picked = np.argmin(means, axis=1)
    return float(np.mean(picked[finite] == values.index(optimum))) if finite.any() else math.nan
