"""Hyperparameter figure: transfer of each non-LR HP across width (`hp_transfer`, from an
independent search around the defaults). The search figures are in `search`."""

from __future__ import annotations

import pandas as pd

from umup_repro.figures.loss_lines import loss_panel, loss_ylim, records
from umup_repro.figures.style import (
    HP_LABEL,
    MARK_LEGEND,
    bottom_legend,
    empty_panel,
    new_figure,
    ordered_variants,
    param_label,
    save_figure,
)


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
    fig.suptitle(
        "Hyperparameter transfer across width: loss vs each HP, the others at their defaults\n"
        "(independent search); ★ optimum per width"
    )
    save_figure(fig, out)
    return pd.DataFrame(rows_out, columns=["panel", "hp", "line", "x_opt", "loss_opt", "runs", "diverged", "censored"])


__all__ = ["hp_transfer"]
