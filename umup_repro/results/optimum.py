"""Where a line's optimum lies, with its uncertainty: the vertex of a quadratic in log2 space.

For one line of a transfer sweep (loss vs log2 η, or vs log2 of an HP), `locate` takes the grid
point with the lowest mean loss and fits a parabola through it and its two neighbours (3 points:
the fewest that fix a quadratic, and a quadratic describes loss vs log2 η only near the optimum:
further out the curve is asymmetric, divergence on the high-η side; `tiny`'s lines have 3-5
points, so more would span the whole grid). The vertex of three equally spaced points whose middle
one is lowest lies within half a step of it.

An optimum at a grid edge is *censored*: `lower` (the optimum is at or below the lowest value,
assuming a loss convex in log2 η) or `upper`; its value is the edge, a bound, and its interval is
open on that side (-inf or +inf). A neighbour that diverged leaves no fit: the optimum is the best
point, its interval the span between its neighbours (convexity alone).

The interval (95%, 2.5th-97.5th percentile of 1000 seeded resamples, each refitted: argmin, then
the vertex, or the edge when the resample's argmin is an edge): a bootstrap over seeds where every
point of the line has at least 3 seed replicates (with 2 a bootstrap sees only 3 distinct means
per point); otherwise each point's mean loss is perturbed by the seed noise `sigma` (one run's
standard deviation, umup_repro/results/seed_noise.py `pooled_sigma`) over √n. Without either,
no interval (NaN): the comparisons then use the point value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
MIN_BOOTSTRAP_SEEDS = 3
LOWER, UPPER = "lower", "upper"


@dataclass
class Optimum:
    """A line's optimum in log2 units: the fit, its 95% interval, censoring and how it was got."""

    log2: float
    lo: float
    hi: float
    censored: str  # "", "lower" or "upper"
    interval_from: str  # "bootstrap over seeds", "seed noise σ …", "" (none)


def vertex(x: np.ndarray, y: np.ndarray) -> float:
    """Vertex of the parabola through three points (x ascending); the middle x if it is flat
    or opens downwards (then the middle point is not a minimum of the fit)."""
    a, b, _ = np.polyfit(x, y, 2)
    if not a > 0:
        return float(x[1])
    return float(np.clip(-b / (2 * a), x[0], x[2]))


def _point(x: np.ndarray, y: np.ndarray) -> tuple[float, str]:
    """(optimum, censored) of one line of mean losses (inf: diverged)."""
    if not np.isfinite(y).any():
        return math.nan, ""
    i = int(np.argmin(y))
    if len(x) == 1:
        return float(x[0]), ""
    if i == 0:
        return float(x[0]), LOWER
    if i == len(x) - 1:
        return float(x[-1]), UPPER
    near = y[i - 1 : i + 2]
    if not np.isfinite(near).all():
        return float(x[i]), ""
    return vertex(x[i - 1 : i + 2], near), ""


def locate(x, losses: list[np.ndarray], sigma: float = math.nan, seed: int = 0) -> Optimum:
    """The optimum of a line: `x` the log2 grid values, `losses[k]` the replicate losses at x[k]
    (inf or NaN: diverged, which rules the point out, as in umup_repro/results/replicates.py)."""
    order = np.argsort(np.asarray(x, dtype=float))
    x = np.asarray(x, dtype=float)[order]
    reps = [np.where(np.isnan(r), np.inf, np.asarray(r, dtype=float)) for r in (losses[k] for k in order)]
    means = np.array([r.mean() if len(r) and np.isfinite(r).all() else np.inf for r in reps])
    opt, censored = _point(x, means)
    if not math.isfinite(opt):
        return Optimum(math.nan, math.nan, math.nan, "", "")
    i = int(np.argmin(means))
    rng = np.random.default_rng(seed)
    if all(len(r) >= MIN_BOOTSTRAP_SEEDS for r in reps):
        draws = np.stack(
            [r[rng.integers(len(r), size=(RESAMPLES, len(r)))].mean(axis=1) for r in reps], axis=1
        )  # inf where a diverged replicate is drawn
        source = f"bootstrap over seeds ({min(len(r) for r in reps)}+ per point)"
    elif math.isfinite(sigma) and sigma > 0:
        n = np.array([max(len(r), 1) for r in reps])
        draws = means + rng.normal(size=(RESAMPLES, len(x))) * sigma / np.sqrt(n)
        source = f"seed noise σ {sigma:.3g}"
    else:
        draws, source = None, ""
    if draws is None:
        lo = hi = math.nan
    else:
        fits = np.array([_point(x, d)[0] for d in draws])
        lo, hi = (float(v) for v in np.nanpercentile(fits, [2.5, 97.5]))
    if censored == LOWER:
        lo, hi = -math.inf, max(opt, hi) if math.isfinite(hi) else opt
    elif censored == UPPER:
        lo, hi = min(opt, lo) if math.isfinite(lo) else opt, math.inf
    elif 0 < i < len(x) - 1 and not np.isfinite(means[i - 1 : i + 2]).all():
        lo, hi = float(x[i - 1]), float(x[i + 1])  # a diverged neighbour: no fit, convexity alone
    return Optimum(opt, lo, hi, censored, source)


def drift_interval(target: Optimum, proxy: Optimum) -> tuple[float, float]:
    """Interval of target − proxy (log2): the widest difference of the two intervals (each its
    point where it has none); a censored side makes it open."""

    def bounds(o: Optimum) -> tuple[float, float]:
        lo = o.lo if not math.isnan(o.lo) else o.log2
        hi = o.hi if not math.isnan(o.hi) else o.log2
        return lo, hi

    (tl, th), (pl, ph) = bounds(target), bounds(proxy)
    return tl - ph, th - pl


def fmt_bound(point: float, lo: float, hi: float) -> str:
    """A drift as text: a bound (`≤ −2`, `≥ 1`) when one side of its interval is open."""
    if math.isinf(lo) and math.isinf(hi):
        return "unbounded"
    if math.isinf(lo):
        return f"≤ {hi:+.2g}"
    if math.isinf(hi):
        return f"≥ {lo:+.2g}"
    if math.isnan(lo) or math.isnan(hi) or lo == hi:
        return f"{point:+.2g}"
    return f"{point:+.2g} [{lo:+.2g}, {hi:+.2g}]"


__all__ = ["LOWER", "UPPER", "Optimum", "drift_interval", "fmt_bound", "locate", "vertex"]
