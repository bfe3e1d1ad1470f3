"""Learning-rate transfer figures: final loss vs LR, a line per width / depth / batch size /
training steps (`transfer_width`, `transfer_depth`, `transfer_batch`, `transfer_steps`), and the
embedding LR rule across width (`embedding_lr`). Each returns the optimum of each line."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from umup_repro.figures.loss_lines import loss_panel, loss_ylim, records
from umup_repro.figures.style import (
    MARK_LEGEND,
    bottom_legend,
    empty_panel,
    ordered_variants,
    panel_row,
    param_label,
    save_figure,
)

# What each LR-transfer figure puts on its lines (figure name → config column, label).
TRANSFER_AXES = {
    "transfer_width": ("model.width", "width"),
    "transfer_depth": ("model.depth", "depth"),
    "transfer_batch": ("train.batch_size", "batch size"),
    "transfer_steps": ("train.steps", "training steps"),
}
EMB_RULE_LABEL = {
    "inv_sqrt_fan_out": r"$c_{\mathrm{emb}} = 1/\sqrt{\mathrm{fan\_out}}$ (u-μP's rule)",
    "constant": r"$c_{\mathrm{emb}} = 1$ (μP's rule)",
}


def _loss_vs_lr_panels(
    df: pd.DataFrame,
    *,
    panel: str,
    panels: list,
    panel_title: Callable,
    line: str,
    line_name: str,
    suptitle: str,
    out,
    x: str = "train.lr",
    x_label: str = "learning rate η (log₂ scale)",
) -> pd.DataFrame:
    fig, axes = panel_row(len(panels), 3.5, 3.4, sharey=True)
    ylim = loss_ylim(df["loss"])
    rows_out = []
    for ax, p in zip(axes, panels):
        rows = loss_panel(ax, df[df[panel] == p], ylim, x=x, line=line, line_name=line_name)
        ax.set_title(panel_title(p))
        ax.set_xlabel(x_label)
        ax.legend(fontsize=7, loc="lower left" if len(rows) > 3 else "best", framealpha=0.85)
        rows_out += records(rows, panel=p)
    if not panels:
        empty_panel(axes[0], "no runs in the tables")
    axes[0].set_ylabel("final validation loss")
    bottom_legend(fig, MARK_LEGEND)
    fig.suptitle(suptitle)
    save_figure(fig, out)
    return pd.DataFrame(rows_out, columns=["panel", "line", "x_opt", "loss_opt", "runs", "diverged", "censored"])


def transfer(name: str, df: pd.DataFrame, out) -> pd.DataFrame:
    """Loss vs LR, a line per value of the figure's axis, a panel per parametrization."""
    axis, axis_label = TRANSFER_AXES[name]
    n = df[axis].nunique()
    return _loss_vs_lr_panels(
        df,
        panel="variant",
        panels=ordered_variants(df["variant"]),
        panel_title=param_label,
        line=axis,
        line_name=axis_label,
        out=out,
        suptitle=f"Learning-rate transfer across {axis_label} ({n} value{'s' * (n != 1)}): "
        f"final validation loss vs η; ★ optimum of each {axis_label}",
    )


def transfer_width(df, out):
    return transfer("transfer_width", df, out)


def transfer_depth(df, out):
    return transfer("transfer_depth", df, out)


def transfer_batch(df, out):
    return transfer("transfer_batch", df, out)


def transfer_steps(df, out):
    return transfer("transfer_steps", df, out)


def embedding_lr(df: pd.DataFrame, out) -> pd.DataFrame:
    """u-μP loss vs LR across width with the embedding LR rule c_emb = 1/√fan_out vs 1."""
    rule = "train.emb_lr_rule"
    order = ["inv_sqrt_fan_out", "constant"]
    panels = sorted(df[rule].dropna().unique(), key=lambda r: (order.index(r) if r in order else 9, r))
    params = ", ".join(param_label(v) for v in ordered_variants(df["variant"]))
    return _loss_vs_lr_panels(
        df,
        panel=rule,
        panels=panels,
        panel_title=lambda r: f"{params}: {EMB_RULE_LABEL.get(r, r)}",
        line="model.width",
        line_name="width",
        out=out,
        suptitle="Embedding LR rule: loss vs η across width (the better rule keeps the optimum put)",
    )


__all__ = [
    "TRANSFER_AXES",
    "embedding_lr",
    "transfer",
    "transfer_batch",
    "transfer_depth",
    "transfer_steps",
    "transfer_width",
]
