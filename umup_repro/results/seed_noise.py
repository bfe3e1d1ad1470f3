"""Seed noise of a table's losses: mean, standard error and number of seeds per configuration,
from per-seed rows or from a table already aggregated over seeds (its columns found by name), the
margin within which two losses are not told apart, and one run's seed noise pooled over every
replicated configuration (`pooled_sigma`, what an optimum's interval uses without replicates).

A configuration some of whose seeds diverged counts as diverged (NaN loss), not as the mean of
its survivors: the one rule of umup_repro/results/replicates.py and the staged search
(umup_repro/sweeps/search_stage.py), so that a fragile η never wins by losing its bad seeds."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

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
    rule the key out: a key any of whose seeds diverged has a NaN loss (module docstring). sem is
    NaN without replicates.
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
    out = g.agg(loss="mean", std="std", n="count", rows="size").reset_index()
    out.loc[out["n"] < out["rows"], ["loss", "std"]] = np.nan  # a diverged seed rules the configuration out
    out = out.drop(columns=["rows"])
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


def pooled_sigma(tables: list[pd.DataFrame], keys: list[str] | None = None) -> tuple[float, int, int]:
    """(σ, configurations, degrees of freedom): one run's standard deviation of the final loss
    over seeds, pooled (Σ(n−1)s² / Σ(n−1)) over every configuration with ≥ 2 finite seed
    replicates. A configuration is a `replicate` group (umup_repro/results/replicates.py) or,
    without that column, equal `keys`. NaN when no table has replicates."""
    ss, dof, groups = 0.0, 0, 0
    for df in tables:
        if df is None or not len(df):
            continue
        df = prepare(df)
        by = ["replicate"] if "replicate" in df else [k for k in keys or [] if k in df]
        if not by:
            continue
        for _, g in df.groupby(by, dropna=False):
            x = g["loss"].to_numpy(dtype=float)
            if len(x) < 2 or not np.isfinite(x).all():
                continue
            ss += float(np.var(x, ddof=1)) * (len(x) - 1)
            dof += len(x) - 1
            groups += 1
    return (math.sqrt(ss / dof) if dof else math.nan), groups, dof


def tables_noise(tables: Path, sweeps: Iterable[str], read: Mapping[str, pd.DataFrame]) -> tuple[float, str]:
    """(σ, where it was measured) pooled over the sweep tables in `read` and those of `sweeps`
    under `tables` (a preset's sweeps with seed replicates, e.g. `tiny`'s fp8 pair)."""
    frames = dict(read)
    for s in sweeps:
        path = Path(tables) / f"{s}.csv"
        if s not in frames and path.is_file():
            try:
                frames[s] = pd.read_csv(path)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
                continue
    frames = {s: f for s, f in frames.items() if "replicate" in f}
    sigma, groups, dof = pooled_sigma(list(frames.values()))
    named = [s for s, f in frames.items() if f.drop_duplicates("cell")["replicate"].duplicated().any()]
    return sigma, (f"pooled over {groups} configurations of {', '.join(named)}, {dof} dof" if groups else "")


def replicated(cells: Iterable) -> bool:
    """Whether some of a sweep's cells are seed replicates of one another (what the workflow
    passes to the transfer summary for its seed noise)."""
    from umup_repro.results.replicates import replicate_key

    keys = [replicate_key(c) for c in cells]
    return len(set(keys)) < len(keys)


__all__ = ["NOISE_SIGMAS", "best_per", "loss_stats", "margin", "pooled_sigma", "replicated", "tables_noise"]
