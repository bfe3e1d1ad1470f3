"""The embedding update and the matmul that follows it: which terms survive at large width?

An embedding row e ∈ ℝᵈ (unit RMS) feeds a hidden weight W ∈ ℝ^{(d+1)×d} (entries N(0,1)/√d)
whose output receives the gradient g ∈ ℝ^{d+1} (unit RMS). One SGD-like step, with the
embedding LR η_e and the weight LR η_W:

    u_e = Wᵀg·η_e,   u_W = g·eᵀ·η_W,   e' = (e + u_e)/std(e + u_e),   x' = (W + u_W)·e'

and x'·std(e + u_e) = W e + t2 + t3 + t4 with t2 = W Wᵀ g η_e (the embedding's update seen through
W), t3 = g eᵀ η_W e (W's update applied to the old embedding), t4 = g eᵀ η_W Wᵀ g η_e (the two
updates together).

η_W = 1/d is the LR that makes a fully aligned update (u_W e with e the very vector u_W was built
from: eᵀe = d) Θ(1) ("full alignment", μP's hidden-weight rule); η_W = d^-½ is right only when
update and input do not align ("no alignment"). η_e = 1 is μP's embedding LR, η_e = d^-½ u-μP's
rule (1/√fan_out). We report the RMS of each term against d = 2^6…2^14 (float64; mean over
samples: several draws of W, more at small d where they are cheap, each with 8 independent (e, g)
pairs) and its log-log slope.

Predicted exponents (``predicted_slope``): Wᵀg has Θ(1) entries, and W Wᵀ g too (W Wᵀ is Θ(1) in
operator norm), so t2 ∝ η_e; eᵀe = d exactly, so t3 = g·d·η_W; eᵀWᵀg = (We)·g is a sum of d+1
independent Θ(1) products, so Θ(√d), and t4 ∝ √d·η_W·η_e.
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

DIMS = tuple(2**k for k in range(6, 15))
WEIGHT_LR = {"full_alignment": -1.0, "no_alignment": -0.5}  # η_W = d^exponent
EMBEDDING_LR = {"mup": 0.0, "umup": -0.5}  # η_e = d^exponent
PAIRS = 8  # independent (e, g) pairs per draw of W
TERMS = ("We", "t2", "t3", "t4", "x_new")
TERM_LABELS = {
    "We": "W e",
    "t2": "t2 = W Wᵀ g η_e",
    "t3": "t3 = g eᵀ η_W e",
    "t4": "t4 = g eᵀ η_W Wᵀ g η_e",
    "x_new": "x' (output after the update)",
}


def draws_for(d: int, min_draws: int = 2, max_draws: int = 32) -> int:
    """How many W to draw at width d: many where a draw is cheap, `min_draws` at the largest."""
    return int(np.clip(2**28 // (d * d), min_draws, max_draws))


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=0))


def draw(d: int, rng: np.random.Generator, pairs: int | None = None, out: np.ndarray | None = None):
    """(e, W, g): W with entries N(0,1)/√d, e and g of exactly unit RMS (float64).

    With `pairs` = K, e and g are (d, K) and (d+1, K): K independent (e, g) pairs that share W
    (cheap extra samples: the matvecs become one matmul). `out` is an optional flat float64
    buffer of at least (d+1)·d entries reused for W (drawing into memory already touched is much
    faster than allocating 2 GiB again at d = 2^14).
    """
    shape = () if pairs is None else (pairs,)
    e = _unit_rms(rng.standard_normal((d, *shape)))
    g = _unit_rms(rng.standard_normal((d + 1, *shape)))
    if out is None:
        W = rng.standard_normal((d + 1, d))
    else:
        W = out[: (d + 1) * d].reshape(d + 1, d)
        rng.standard_normal(out=W)
    W *= d**-0.5
    return e, W, g


def update_terms(
    e: np.ndarray, W: np.ndarray, g: np.ndarray, eta_e: float, eta_w: float, cache: dict | None = None
) -> dict[str, np.ndarray]:
    """The decomposition's terms for one (e, W, g) and one pair of LRs.

    e (d,) and g (d+1,), or (d, K) and (d+1, K) for K pairs handled column by column. Returns
    We, t2, t3, t4, std (the normaliser std(e + u_e), per column) and x_new = (W + u_W)·e', the
    latter computed directly (one more product with e', without forming u_W), not from the terms,
    so that (We + t2 + t3 + t4)/std == x_new is a real check. `cache` (a dict) keeps the
    LR-independent products between calls with the same e, W, g.
    """
    c = {} if cache is None else cache
    if "We" not in c:
        c["We"] = W @ e
        c["Wtg"] = W.T @ g
        c["WWtg"] = W @ c["Wtg"]
        c["ee"] = np.sum(e * e, axis=0)
        c["eWtg"] = np.sum(e * c["Wtg"], axis=0)
    e_sum = e + c["Wtg"] * eta_e
    std = np.std(e_sum, axis=0)
    e_new = e_sum / std
    x_new = W @ e_new + g * (eta_w * np.sum(e * e_new, axis=0))  # (W + g eᵀ η_W) e'
    return {
        "We": c["We"],
        "t2": c["WWtg"] * eta_e,
        "t3": g * (c["ee"] * eta_w),
        "t4": g * (c["eWtg"] * (eta_w * eta_e)),
        "std": std,
        "x_new": x_new,
    }


def _rms(x: np.ndarray) -> np.ndarray:
    """RMS of each column (of the vector, for 1-D input)."""
    return np.sqrt(np.mean(x * x, axis=0))


def compute(dims=DIMS, pairs: int = PAIRS, min_draws: int = 2, max_draws: int = 32, seed: int = 0) -> pd.DataFrame:
    """Long table: weight_lr, embedding_lr, d, term, rms (mean over samples), IQR, samples.

    Samples at width d: draws_for(d) independent W, each with `pairs` independent (e, g).
    """
    buf = np.empty((max(dims) + 1) * max(dims))
    records = []
    for d in dims:
        for s in range(draws_for(d, min_draws, max_draws)):
            e, W, g = draw(d, np.random.default_rng([seed, d, s]), pairs=pairs, out=buf)
            cache: dict = {}
            for wname, wexp in WEIGHT_LR.items():
                for ename, eexp in EMBEDDING_LR.items():
                    t = update_terms(e, W, g, eta_e=float(d) ** eexp, eta_w=float(d) ** wexp, cache=cache)
                    for term in TERMS:
                        for k, r in enumerate(_rms(t[term])):
                            records.append((wname, ename, d, term, s * pairs + k, r))
    raw = pd.DataFrame(records, columns=["weight_lr", "embedding_lr", "d", "term", "sample", "rms"])
    keys = ["weight_lr", "embedding_lr", "d", "term"]
    table = (
        raw.groupby(keys, sort=False)["rms"]
        .agg(rms="mean", rms_q25=lambda x: x.quantile(0.25), rms_q75=lambda x: x.quantile(0.75), samples="size")
        .reset_index()
    )
    return table


def predicted_slope(weight_lr: str, embedding_lr: str, term: str) -> float:
    """Exponent of d from the argument in the module docstring."""
    w, e = WEIGHT_LR[weight_lr], EMBEDDING_LR[embedding_lr]
    t = {"We": 0.0, "t2": e, "t3": 1.0 + w, "t4": 0.5 + w + e}
    if term in t:
        return t[term]
    # x' = (W e + t2 + t3 + t4)/std: the largest term wins; std(e + u_e) is Θ(1) in every case.
    return max(t.values())


def slopes(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (w, e, term), g in table.groupby(["weight_lr", "embedding_lr", "term"], sort=False):
        g = g.sort_values("d")
        rows.append(
            {
                "weight_lr": w,
                "embedding_lr": e,
                "term": term,
                "slope": loglog_slope(g["d"], g["rms"]),
                "predicted_slope": predicted_slope(w, e, term),
                "rms_at_min_d": g["rms"].iloc[0],
                "rms_at_max_d": g["rms"].iloc[-1],
            }
        )
    return pd.DataFrame(rows)


_W_TITLE = {"full_alignment": "η_W = 1/d (full alignment)", "no_alignment": "η_W = 1/√d (no alignment)"}
_E_TITLE = {"mup": "η_e = 1 (μP)", "umup": "η_e = 1/√d (u-μP)"}
_COLORS = {"We": "0.6", "t2": "C0", "t3": "C1", "t4": "C2", "x_new": "C3"}


def plot(table: pd.DataFrame, figure_path: str | os.PathLike, slope_table=None):
    """2×2 grid (weight LR rule × embedding LR rule): RMS of each term against d, log-log."""
    slope_table = slopes(table) if slope_table is None else slope_table
    fig = new_figure(figsize=(10, 7.5))
    axes = fig.subplots(2, 2, sharex=True, sharey=True)
    for i, w in enumerate(WEIGHT_LR):
        for j, e in enumerate(EMBEDDING_LR):
            ax = axes[i, j]
            for term in TERMS:
                g = table[(table.weight_lr == w) & (table.embedding_lr == e) & (table.term == term)].sort_values("d")
                if g.empty:
                    continue
                s = slope_table[
                    (slope_table.weight_lr == w) & (slope_table.embedding_lr == e) & (slope_table.term == term)
                ]["slope"].iloc[0]
                ax.plot(
                    g["d"],
                    g["rms"],
                    marker="o",
                    ms=3,
                    color=_COLORS[term],
                    lw=2.2 if term == "x_new" else 1.2,
                    ls="--" if term == "We" else "-",
                    label=f"{TERM_LABELS[term]}: slope {s:+.2f}",
                )
                ax.fill_between(g["d"], g["rms_q25"], g["rms_q75"], color=_COLORS[term], alpha=0.15, lw=0)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log", base=2)
            ax.set_title(f"{_W_TITLE[w]}, {_E_TITLE[e]}", fontsize=9)
            ax.legend(fontsize=7, loc="upper left")
            if i == 1:
                ax.set_xlabel("width d")
            if j == 0:
                ax.set_ylabel("RMS (mean over samples, IQR band)")
    fig.suptitle(
        "Embedding update followed by a matmul: x'·std = W e + t2 + t3 + t4 (log-log slopes in the legends)",
        fontsize=10,
    )
    return save_figure(fig, figure_path)


def run(table_path, figure_path, slopes_table_path=None, dims=DIMS, pairs: int = PAIRS):
    table = compute(dims=dims, pairs=pairs)
    slope_table = slopes(table)
    write_table(table, table_path)
    if slopes_table_path is not None:
        write_table(slope_table, slopes_table_path)
    plot(table, figure_path, slope_table)
    return table, slope_table


def main(args: argparse.Namespace) -> int:
    """`umup-repro analysis embedding_update`: the table, the slope table and the figure."""
    reject_options(args, ("plateau_table", "alignment_table", "alignment_figure"), "embedding_update")
    run(args.table, args.figure, slopes_table_path=args.slopes_table or sibling(args.table, "_slopes"))
    return 0
