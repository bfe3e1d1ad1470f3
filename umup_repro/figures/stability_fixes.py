"""Paper Fig. 2: μP's LR transfer across width in TP-V's setting, a standard Llama recipe and
Llama with the two stability fixes (`stability_fixes`): loss vs LR, a line per width, a column
per setting and a row per parametrization (μP, and u-μP alongside where the sweep has it),
optima starred. The settings are read off each cell's config (`umup_repro.results.stability`)."""

from __future__ import annotations

import pandas as pd

from umup_repro.figures.loss_lines import loss_panel, loss_ylim, records
from umup_repro.figures.style import (
    MARK_LEGEND,
    bottom_legend,
    empty_panel,
    label_edges,
    new_figure,
    ordered_variants,
    param_label,
    save_figure,
)
from umup_repro.results.stability import SETTING_LABELS, SETTINGS, with_setting


def stability_fixes(df: pd.DataFrame, out) -> pd.DataFrame:
    """Loss vs η across width per (parametrization, setting); returns each line's optimum."""
    df = with_setting(df)
    settings = [s for s in SETTINGS if s in set(df["setting"])]
    variants = ordered_variants(df["variant"].unique())
    fig = new_figure(figsize=(3.5 * max(len(settings), 1) + 0.4, 3.2 * max(len(variants), 1) + 0.6))
    grid = fig.subplots(max(len(variants), 1), max(len(settings), 1), squeeze=False)
    rows_out = []
    for r, variant in enumerate(variants):
        in_row = df[df["variant"] == variant]
        for c, setting in enumerate(settings):
            ax = grid[r, c]
            # one y-range per panel: TP-V's repeated data puts its validation loss far from the others'
            panel = in_row[in_row["setting"] == setting]
            rows = loss_panel(ax, panel, loss_ylim(panel["loss"]), x="train.lr", line="model.width", line_name="width")
            ax.set_title(f"{param_label(variant)}: {SETTING_LABELS[setting]}", fontsize=8)
            if rows:
                ax.legend(fontsize=7, loc="best", framealpha=0.85)
            label_edges(grid, r, c, "learning rate η (log₂ scale)", "final validation loss")
            rows_out += records(rows, variant=variant, setting=setting)
    if not variants or not settings:
        empty_panel(grid[0, 0], "no runs in the tables")
    bottom_legend(fig, MARK_LEGEND)
    fig.suptitle("Stability fixes (paper Fig. 2): loss vs η across width; ★ optimum of each width")
    save_figure(fig, out)
    return pd.DataFrame(
        rows_out, columns=["variant", "setting", "line", "x_opt", "loss_opt", "runs", "diverged", "censored"]
    )


__all__ = ["stability_fixes"]
