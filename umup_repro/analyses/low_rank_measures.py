"""Measures of the low-rank analysis's loss curves (`low_rank.py`): when a curve first falls below
a level, and how many distinct drops it makes (plateaus between them), per run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def first_below(curve: np.ndarray, level: float) -> float:
    """First index where `curve` < level (NaN if never)."""
    hit = np.flatnonzero(curve < level)
    return float(hit[0]) if len(hit) else float("nan")


def count_drops(
    rel: np.ndarray, rate: float = 1.5, min_factor: float = 1.5, floor: float = 1e-3, per_decade: int = 12
) -> int:
    """Number of separate sharp drops of a relative-excess curve rel[t] (rel[0] = 1).

    On a log-spaced grid of steps (`per_decade` points a decade) the local rate
    −d log ℓ / d log t is computed; a drop is a maximal run of grid intervals where it exceeds
    `rate` (the loss falls faster than t^-rate) and over which ℓ falls by at least `min_factor`.
    Only the curve down to `floor` counts (what happens to a loss already 1000× smaller is not a
    plateau of interest, and Adam's noise floor would count as drops).
    """
    steps = len(rel) - 1
    grid = np.unique(
        np.round(np.logspace(0, math.log10(max(steps, 1)), int(per_decade * math.log10(max(steps, 10))) + 1)).astype(
            int
        )
    )
    y = np.log10(np.maximum(rel[grid], 1e-300))
    below = np.flatnonzero(y < math.log10(floor))
    if len(below):
        grid, y = grid[: below[0] + 1], y[: below[0] + 1]
    if len(grid) < 2:
        return 0
    r = -np.diff(y) / np.diff(np.log10(grid))
    drops, run_fall = 0, 0.0
    for i, ri in enumerate(r):
        if ri > rate:
            run_fall += y[i] - y[i + 1]
        if ri <= rate or i == len(r) - 1:
            if run_fall >= math.log10(min_factor):
                drops += 1
            run_fall = 0.0
    return drops


def run_measures(excess: np.ndarray) -> pd.DataFrame:
    """Per-run plateau measures from excess curves [steps + 1, B]."""
    rel = excess / excess[0]
    rows = []
    for j in range(rel.shape[1]):
        c = rel[:, j]
        half, onset = first_below(c, 0.5), first_below(c, 0.9)
        rows.append(
            {
                "plateau_steps": half,
                "onset_steps": onset,
                "sharpness": onset / half if half > 0 else float("nan"),
                "drops": count_drops(c),
                "final_excess_rel": c[-1],
                "initial_excess": excess[0, j],
            }
        )
    return pd.DataFrame(rows)
