"""Hyperparameter figures: transfer of each non-LR HP across width (`hp_transfer`, from an
independent search around the defaults) and random vs independent search (`search_strategies`,
best loss so far vs number of runs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.lines import Line2D

from umup_repro.figures.loss_lines import loss_panel, loss_ylim, records
from umup_repro.figures.style import (HP_LABEL, MARK_LEGEND, bottom_legend, empty_panel, mark_top, new_figure,
                                      ordered_variants, panel_row, param_label, save_figure)


def hp_transfer(df: pd.DataFrame, out) -> pd.DataFrame:
    """Each non-LR HP: loss vs its value (log2), a line per width; a row per parametrization,
    a panel per HP. The base point (all defaults) joins every HP's line at the default value."""
    axis_col = "search.axis"
    axes_of = {}
    variants = ordered_variants(df["variant"])
    for v in variants:
        g = df[df["variant"] == v]
        keys = [a for a in g[axis_col].dropna().astype(str).unique() if a not in ("base", "", "train.lr")]
        axes_of[v] = sorted(keys)
    ncols = max([len(k) for k in axes_of.values()] + [1])
    fig = new_figure(figsize=(3.0 * ncols + 0.4, 2.9 * max(len(variants), 1) + 0.4))
    grid = fig.subplots(max(len(variants), 1), ncols, squeeze=False)
    rows_out = []
    for i, v in enumerate(variants):
        g = df[df["variant"] == v]
        base = g[g[axis_col].astype(str) == "base"]
        ylim = loss_ylim(g["loss"])
        for j in range(ncols):
            ax = grid[i, j]
            if j >= len(axes_of[v]):
                ax.set_visible(False)
                continue
            key = axes_of[v][j]
            sub = pd.concat([g[g[axis_col].astype(str) == key], base])
            sub = sub[pd.to_numeric(sub[key], errors="coerce") > 0].copy()
            sub[key] = pd.to_numeric(sub[key])
            rows = loss_panel(ax, sub, ylim, x=key, line="model.width", line_name="width", x_is_lr=False)
            if len(base) and key in base:
                default = pd.to_numeric(base[key], errors="coerce").dropna()
                if len(default):
                    ax.axvline(default.iloc[0], color="0.6", lw=0.8, ls=":", zorder=0)
            hp = key.split(".", 1)[-1]
            ax.set_title(f"{param_label(v)}: {HP_LABEL.get(hp, hp)}")
            ax.set_xlabel(f"{HP_LABEL.get(hp, hp)} (log₂ scale; dotted: default)")
            if j == 0:
                ax.set_ylabel("final validation loss")
            ax.legend(fontsize=6.5, loc="best", framealpha=0.85)
            rows_out += records(rows, panel=v, hp=key)
    if not variants:
        empty_panel(grid[0, 0], "no runs in the tables")
    bottom_legend(fig, MARK_LEGEND)
    fig.suptitle("Hyperparameter transfer across width: loss vs each HP, the others at their defaults\n"
                 "(independent search); ★ optimum per width")
    save_figure(fig, out)
    return pd.DataFrame(rows_out, columns=["panel", "hp", "line", "x_opt", "loss_opt", "runs", "diverged"])


def search_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Per parametrization and strategy (`search.kind`, else the sweep name), the runs in
    `search.index` order and the best (non-diverged) loss after each."""
    df = df.copy()
    df["strategy"] = df["search.kind"].fillna(df["sweep"]) if "search.kind" in df else df["sweep"]
    df["strategy"] = df["strategy"].astype(str)
    order = "search.index" if "search.index" in df else "cell"
    rows = []
    for (v, s), g in df.groupby(["variant", "strategy"], sort=False):
        g = g.sort_values(order)
        best = g["loss"].cummin().ffill()  # a diverged run (NaN) keeps the best so far
        rows.append(pd.DataFrame({"variant": v, "strategy": s, "runs": np.arange(1, len(g) + 1),
                                  "loss": g["loss"].to_numpy(), "diverged": g["diverged"].to_numpy(),
                                  "best_so_far": best.to_numpy()}))
    cols = ["variant", "strategy", "runs", "loss", "diverged", "best_so_far"]
    return pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols)


def search_strategies(df: pd.DataFrame, out) -> pd.DataFrame:
    """Best validation loss so far vs number of runs: random vs independent search, a panel per
    parametrization; each run's own loss as a faint dot, diverged runs as × at the top."""
    curves = search_curves(df)
    variants = ordered_variants(curves["variant"])
    strategies = sorted(curves["strategy"].unique(), key=lambda s: (s != "random", s))
    colors = {s: c for s, c in zip(strategies, ("C0", "C3", "C2", "C4", "C5"))}
    labels = {"random": "random search", "independent": "independent search (LR, then each HP)"}
    fig, axes = panel_row(len(variants), 3.8, 3.4, sharey=True)
    # y-range: every best-so-far curve from its second run on (a bad first run enters from the top)
    tails = [g["best_so_far"].iloc[min(1, len(g) - 1):] for _, g in curves.groupby(["variant", "strategy"])]
    tail = pd.concat(tails).dropna() if tails else pd.Series(dtype=float)
    ylim = None
    if len(tail):
        lo, hi = tail.min(), tail.max()
        pad = 0.08 * max(hi - lo, 0.05)
        ylim = (lo - pad, hi + 3 * pad)
    for ax, v in zip(axes, variants):
        for s in strategies:
            c = curves[(curves["variant"] == v) & (curves["strategy"] == s)]
            if c.empty:
                continue
            final = c["best_so_far"].iloc[-1]
            ax.step(c["runs"], c["best_so_far"], where="post", color=colors[s], lw=1.8,
                    label=f"{labels.get(s, s)}: best {final:.3f} after {len(c)} runs")
            ax.scatter(c["runs"], c["loss"], s=14, color=colors[s], alpha=0.5, lw=0)
            if ylim is not None:
                above = c[c["loss"] > ylim[1]]["runs"].tolist()
                ax.set_ylim(*ylim)
                mark_top(ax, above, [colors[s]] * len(above), "^", size=25)
            div = c[c["diverged"]]["runs"].tolist()
            mark_top(ax, div, [colors[s]] * len(div), "x")
        ax.set_title(param_label(v))
        ax.set_xlabel("number of runs")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.legend(fontsize=7, loc="best", framealpha=0.85)
    if not variants:
        empty_panel(axes[0], "no runs in the tables")
    axes[0].set_ylabel("best validation loss so far")
    bottom_legend(fig, [Line2D([], [], marker="o", ls="", color="0.5", alpha=0.5, ms=4, label="one run's loss"),
                        *MARK_LEGEND[1:]])
    fig.suptitle("Hyperparameter search: best loss vs number of runs, random vs independent search")
    save_figure(fig, out)
    return curves


__all__ = ["hp_transfer", "search_curves", "search_strategies"]
