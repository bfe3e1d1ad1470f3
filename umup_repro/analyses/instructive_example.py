"""The "instructive example" of Tensor Programs V: f(x) = Vᵀ(U·x) under SP and μP.

U, V ∈ ℝⁿ, scalar input x = 1, loss gradient θ = 1 with respect to f, plain SGD with both
updates computed from the same (old) weights:

    V ← V + η_V·θ·U,   U ← U + η_U·θ·V

SP: V = N(0,1)/√n, U = N(0,1), η_V = η_U = 1.  μP: V = N(0,1)/n, U = N(0,1), η_V = 1/n, η_U = n.

We record |f| after 0, 1 and 2 updates against n = 2^6…2^20 (float64, mean of |f| over seeds) in
three variants:

- ``correlated``: the plain updates above;
- ``redrawn``: before each update, U and V are replaced by fresh independent Gaussian vectors with
  the RMS the current U and V have (scale kept, the U–V correlation built by earlier updates
  removed). Before the first update they are independent already, so only update 2 changes;
- ``independent_update``: each update moves V along a fresh vector independent of U (and U along one
  independent of V), with the RMS of U (of V): the correlation between an update and the vector it
  multiplies in f, which the LLN argument of TP-V rests on, is removed altogether.

Exponent predicted from exact arithmetic (``predicted_slope`` in the slope table): in μP's
natural coordinates v = n·V, u = U both updates read v ← v + u, u ← u + v, so every coordinate
stays Θ(1) and f = (1/n)·Σ v_i u_i is Θ(1) whenever v and u are correlated (each update makes them
so: after it v = u) and Θ(n^-½) when they are not.  In SP, V' = V + U has Θ(1) coordinates, so f
after one update is Σ (U+V)² ∝ n.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pandas as pd

from umup_repro.analyses._common import reject_options, sibling
from umup_repro.core.atomic import write_table
from umup_repro.figures.style import new_figure, save_figure
from umup_repro.results.tables import loglog_slope

WIDTHS = tuple(2**k for k in range(6, 21))
SEEDS = 8
UPDATES = (0, 1, 2)
VARIANTS = ("correlated", "redrawn", "independent_update")


def _setup(parametrization: str, n: int) -> tuple[float, float, float]:
    """(init scale of V, η_V, η_U) for one parametrization at width n."""
    if parametrization == "sp":
        return n**-0.5, 1.0, 1.0
    if parametrization == "mup":
        return 1.0 / n, 1.0 / n, float(n)
    raise ValueError(f"unknown parametrization {parametrization!r}")


def _rms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(x * x, axis=-1, keepdims=True))


def _init_normals(n: int, seeds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    init = np.random.default_rng([seed, n])
    return init.standard_normal((seeds, n)), init.standard_normal((seeds, n))


def simulate(
    parametrization: str,
    variant: str,
    n: int,
    seeds: int = SEEDS,
    updates: int = 2,
    theta: float = 1.0,
    seed: int = 0,
    normals: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """f after 0…`updates` updates, shape (updates + 1, seeds); float64, seeds vectorised.

    The init draws depend only on (seed, n) (`normals` passes them in to save drawing them
    again), so all variants and both parametrizations share the same standard normals at a width.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    v_scale, eta_v, eta_u = _setup(parametrization, n)
    z_u, z_v = _init_normals(n, seeds, seed) if normals is None else normals
    U = z_u
    V = z_v * v_scale
    extra = np.random.default_rng([seed, n, VARIANTS.index(variant)])
    fs = [np.einsum("si,si->s", V, U)]
    for _ in range(updates):
        if variant == "redrawn":
            U = extra.standard_normal((seeds, n)) * _rms(U)
            V = extra.standard_normal((seeds, n)) * _rms(V)
        if variant == "independent_update":
            dir_v = extra.standard_normal((seeds, n)) * _rms(U)
            dir_u = extra.standard_normal((seeds, n)) * _rms(V)
        else:
            dir_v, dir_u = U, V
        V, U = V + eta_v * theta * dir_v, U + eta_u * theta * dir_u
        fs.append(np.einsum("si,si->s", V, U))
    return np.stack(fs)


def compute(
    widths=WIDTHS, seeds: int = SEEDS, parametrizations=("sp", "mup"), variants=VARIANTS, seed: int = 0
) -> pd.DataFrame:
    """Long table: parametrization, variant, updates, width, abs_f (mean |f| over seeds), …"""
    rows = []
    for n in widths:
        normals = _init_normals(n, seeds, seed)
        for parametrization in parametrizations:
            for variant in variants:
                f = simulate(parametrization, variant, n, seeds=seeds, updates=max(UPDATES), seed=seed, normals=normals)
                for k in UPDATES:
                    a = np.abs(f[k])
                    rows.append(
                        {
                            "parametrization": parametrization,
                            "variant": variant,
                            "updates": k,
                            "width": n,
                            "abs_f": a.mean(),
                            "abs_f_std": a.std(ddof=1) if seeds > 1 else 0.0,
                            "abs_f_q25": np.quantile(a, 0.25),
                            "abs_f_q75": np.quantile(a, 0.75),
                            "f_mean": f[k].mean(),
                            "seeds": seeds,
                        }
                    )
    return (
        pd.DataFrame(rows)
        .sort_values(["parametrization", "variant", "updates", "width"], key=_order)
        .reset_index(drop=True)
    )


def _order(col: pd.Series) -> pd.Series:
    order = {"sp": 0, "mup": 1} | {v: i for i, v in enumerate(VARIANTS)}
    return col if pd.api.types.is_numeric_dtype(col) else col.map(order)


# Exponents from the exact-arithmetic argument in the module docstring.
PREDICTED_SLOPE = {
    ("sp", "correlated"): (0.0, 1.0, 1.0),
    ("sp", "redrawn"): (0.0, 1.0, 1.0),
    ("sp", "independent_update"): (0.0, 0.5, 0.5),
    ("mup", "correlated"): (-0.5, 0.0, 0.0),
    ("mup", "redrawn"): (-0.5, 0.0, 0.0),
    ("mup", "independent_update"): (-0.5, -0.5, -0.5),
}


def slopes(table: pd.DataFrame) -> pd.DataFrame:
    """Log-log slope of |f| against width per (parametrization, variant, updates)."""
    rows = []
    for (p, v, k), g in table.groupby(["parametrization", "variant", "updates"], sort=False):
        g = g.sort_values("width")
        rows.append(
            {
                "parametrization": p,
                "variant": v,
                "updates": k,
                "slope": loglog_slope(g["width"], g["abs_f"]),
                "predicted_slope": PREDICTED_SLOPE.get((p, v), (np.nan,) * 3)[k],
                "abs_f_at_min_width": g["abs_f"].iloc[0],
                "abs_f_at_max_width": g["abs_f"].iloc[-1],
            }
        )
    return pd.DataFrame(rows)


_TITLES = {
    "correlated": "plain SGD (U, V correlate)",
    "redrawn": "U, V redrawn before each update",
    "independent_update": "updates independent of U, V",
}
_PARAM = {"sp": "SP", "mup": "μP"}


def plot(table: pd.DataFrame, figure_path: str | os.PathLike, slope_table=None):
    """Grid: rows SP / μP, columns the variants; |f| vs n per number of updates, log-log."""
    slope_table = slopes(table) if slope_table is None else slope_table
    params = [p for p in ("sp", "mup") if p in set(table["parametrization"])]
    variants = [v for v in VARIANTS if v in set(table["variant"])]
    fig = new_figure(figsize=(3.6 * len(variants), 3.0 * len(params)))
    axes = fig.subplots(len(params), len(variants), squeeze=False, sharex=True)
    colors = dict(zip(UPDATES, ("0.45", "C0", "C3")))
    for i, p in enumerate(params):
        for j, v in enumerate(variants):
            ax = axes[i, j]
            for k in UPDATES:
                g = table[(table.parametrization == p) & (table.variant == v) & (table.updates == k)].sort_values(
                    "width"
                )
                s = slope_table[
                    (slope_table.parametrization == p) & (slope_table.variant == v) & (slope_table.updates == k)
                ]["slope"].iloc[0]
                ax.plot(
                    g["width"],
                    g["abs_f"],
                    marker="o",
                    ms=3,
                    lw=1.2,
                    color=colors[k],
                    label=f"{k} update{'s' if k != 1 else ''}: slope {s:+.2f}",
                )
                ax.fill_between(g["width"], g["abs_f_q25"], g["abs_f_q75"], color=colors[k], alpha=0.2, lw=0)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{_PARAM[p]}: {_TITLES[v]}", fontsize=9)
            ax.legend(fontsize=7, loc="best")
            if i == len(params) - 1:
                ax.set_xlabel("width n")
            if j == 0:
                ax.set_ylabel("|f|: mean, IQR band over seeds")
    fig.suptitle(
        "TP-V instructive example f = Vᵀ(U·1): output after 0, 1, 2 SGD updates (log-log slopes in the legends)",
        fontsize=10,
    )
    return save_figure(fig, figure_path)


def run(table_path, figure_path, slopes_table_path=None, widths=WIDTHS, seeds: int = SEEDS):
    """Compute, write the table (and the slope table), draw the figure; returns the tables."""
    table = compute(widths=widths, seeds=seeds)
    slope_table = slopes(table)
    write_table(table, table_path)
    if slopes_table_path is not None:
        write_table(slope_table, slopes_table_path)
    plot(table, figure_path, slope_table)
    return table, slope_table


def main(args: argparse.Namespace) -> int:
    """`umup-repro analysis instructive_example`: the table, the slope table and the figure."""
    reject_options(args, ("plateau_table", "alignment_table", "alignment_figure"), "instructive_example")
    run(args.table, args.figure, slopes_table_path=args.slopes_table or sibling(args.table, "_slopes"))
    return 0
