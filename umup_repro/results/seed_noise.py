"""Seed noise of a table's losses: mean, standard error and number of seeds per configuration,
from per-seed rows or from a table already aggregated over seeds (its columns found by name), and
the margin within which two losses are not told apart."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from umup_repro.results.tables import LOSS, prepare

NOISE_SIGMAS = 2.0  # a loss difference smaller than 2 combined standard errors is not resolved


def _find_column(df: pd.DataFrame, *needles: str, exclude: tuple[str, ...] = ()) -> str | None:
    """The first column whose lower-cased name contains all `needles` and none of `exclude`."""
    for col in df.columns:
        name = col.lower()
        if all(n in name for n in needles) and not any(e in name for e in exclude):
            return col
    return None


def loss_stats(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean final validation loss, its standard error and the number of seeds per `keys`.

    Reads either per-seed rows (pooled here: mean, std/√n) or a table already aggregated over
    seeds, found by its columns (`final_val_loss_mean`/`_sem`/`n_seeds` or alike). Diverged runs
    count as missing; a key whose every seed diverged has a NaN loss. sem is NaN without replicates.
    """
    df = df.copy()
    mean_col = _find_column(df, LOSS, "mean")
    sem_col = (
        _find_column(df, LOSS, "sem")
        or _find_column(df, LOSS, "stderr")
        or _find_column(df, LOSS, "std_err")
        or _find_column(df, "loss", "sem")
    )
    n_col = (
        _find_column(df, "n_seed") or _find_column(df, "seeds", exclude=("train.",)) or _find_column(df, "replicates")
    )
    if mean_col is not None:
        df[LOSS] = df[mean_col]
    df = prepare(df)
    keys = [k for k in keys if k in df]
    if sem_col is not None:
        out = df[keys].copy()
        out["loss"] = df["loss"]
        out["sem"] = pd.to_numeric(df[sem_col], errors="coerce")
        out["n"] = pd.to_numeric(df[n_col], errors="coerce") if n_col else np.nan
        return out.groupby(keys, as_index=False, dropna=False).first() if keys else out
    g = df.groupby(keys, dropna=False)["loss"] if keys else df.groupby(lambda _: 0)["loss"]
    out = g.agg(loss="mean", std="std", n="count").reset_index()
    out["sem"] = np.where(out["n"] >= 2, out["std"] / np.sqrt(out["n"].clip(lower=1)), np.nan)
    return out.drop(columns=["std"])


def best_per(stats: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per `by`: the row with the lowest mean loss (its η, loss, sem, n)."""
    ok = stats[stats["loss"].notna()]
    if ok.empty:
        return ok
    return ok.loc[ok.groupby(by, dropna=False)["loss"].idxmin()].reset_index(drop=True)


def margin(*sems: float) -> float:
    """NOISE_SIGMAS × combined standard error; 0 where any side has no replicates."""
    vals = [float(s) for s in sems]
    if not vals or any(not math.isfinite(s) for s in vals):
        return 0.0
    return NOISE_SIGMAS * math.sqrt(sum(s * s for s in vals))


__all__ = ["NOISE_SIGMAS", "best_per", "loss_stats", "margin"]
