"""The coordinate-check figure (`coord_check`): activation RMS vs width after each Adam step, from
the tables `umup-repro coord-check` writes (`umup_repro.analyses.coord_check` computes them)."""

from __future__ import annotations

import pandas as pd

from umup_repro.figures.style import (
    label_edges,
    log2_xaxis,
    log2_yaxis,
    new_figure,
    ordered_variants,
    param_label,
    save_figure,
    type_colors,
    type_legend,
)
from umup_repro.results.tables import tensor_type, width_slopes


def coord_check(table: pd.DataFrame, out) -> pd.DataFrame:
    """TP-V coordinate check: activation RMS vs width after 0…S Adam steps, a row per
    parametrization, a column per step; returns the log-log slope per tensor and step."""
    acts = table[table["kind"] == "activation"].copy()
    acts["type"] = acts["tensor"].map(tensor_type)
    params = ordered_variants(acts["parametrization"])
    steps = sorted(acts["step"].unique())
    colors = type_colors(acts["type"])
    fig = new_figure(figsize=(2.7 * max(len(steps), 1) + 1.8, 2.6 * max(len(params), 1) + 0.3))
    grid = fig.subplots(max(len(params), 1), max(len(steps), 1), squeeze=False, sharey="row", sharex=True)
    slopes = []
    for i, p in enumerate(params):
        tp = table[table["parametrization"] == p]
        s = width_slopes(tp)
        s.insert(0, "parametrization", p)
        slopes.append(s)
        for j, step in enumerate(steps):
            ax = grid[i, j]
            g = acts[(acts["parametrization"] == p) & (acts["step"] == step)]
            for tensor, tg in g.groupby("tensor"):
                tg = tg.sort_values("width")
                ax.plot(tg["width"], tg["rms"], lw=1.0, marker="o", ms=2.5, color=colors[tensor_type(tensor)])
            log2_xaxis(ax, acts["width"], integer_ticks=True)
            log2_yaxis(ax)
            logit = s[(s["step"] == step) & (s["tensor"] == "readout")]["slope"]
            extra = f"; logits slope {logit.iloc[0]:+.2f}" if len(logit) else ""
            ax.set_title(f"{param_label(p)}, step {step}{extra}", fontsize=8)
            label_edges(grid, i, j, "width (log₂ scale)", "activation RMS (log₂)")
    type_legend(fig, colors)
    fig.legends[-1].set_title("tensor (every block)")
    fig.suptitle(
        "Coordinate check: activation RMS vs width after each Adam step (flat in width under μP and u-μP; SP grows)"
    )
    save_figure(fig, out)
    return pd.concat(slopes, ignore_index=True) if slopes else pd.DataFrame()


__all__ = ["coord_check"]
