"""FP8 training figure (`fp8_training`): training-loss curves of u-μP vs u-μP-FP8 vs μP vs
μP-FP8, a panel per width."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import ticker

from umup_repro.figures.style import (
    empty_panel,
    fmt_pow2,
    fmt_value,
    ordered_variants,
    panel_row,
    param_color,
    param_label,
    save_figure,
)
from umup_repro.results.tables import pick_cell


def fp8_training(metrics: pd.DataFrame, df: pd.DataFrame, out) -> pd.DataFrame:
    """Training loss over steps (smoothed; validation points as dots) of u-μP vs u-μP-FP8 vs
    μP vs μP-FP8, a panel per width; per variant the best-loss LR when several were run."""
    widths = sorted(df["model.width"].dropna().unique())
    variants = ordered_variants(df["variant"])
    m = metrics.copy()
    for c in ("step", "train_loss", "val_loss"):
        m[c] = pd.to_numeric(m[c], errors="coerce")
    fig, axes = panel_row(len(widths), 4.2, 3.5, sharey=True)
    records, all_losses = [], []
    for ax, w in zip(axes, widths):
        for v in variants:
            cell = pick_cell(df[(df["variant"] == v) & (df["model.width"] == w)])
            if cell is None:
                continue
            c = m[m["cell"] == cell["cell"]].sort_values("step")
            train = c[np.isfinite(c["train_loss"])]
            span = max(1, len(train) // 20)
            smooth = train["train_loss"].rolling(span, min_periods=1).mean()
            color = param_color(v)
            diverged = bool(cell["diverged"])
            label = f"{param_label(v)} (η={fmt_pow2(cell['train.lr'])})" + (
                ": diverged" if diverged else f": final val {cell['loss']:.3f}"
            )
            ax.plot(train["step"], smooth, color=color, lw=1.4, label=label)
            val = c[np.isfinite(c["val_loss"])]
            ax.scatter(val["step"], val["val_loss"], color=color, s=12, zorder=5, edgecolors="white", linewidths=0.4)
            all_losses += val["val_loss"].tolist() + smooth.tolist()
            if diverged and len(train):
                ax.scatter([train["step"].iloc[-1]], [smooth.iloc[-1]], marker="x", s=50, color=color, zorder=6)
            records.append(
                {
                    "width": w,
                    "variant": v,
                    "cell": cell["cell"],
                    "lr": cell["train.lr"],
                    "diverged": diverged,
                    "final_val_loss": cell["loss"],
                    "last_val_loss": float(val["val_loss"].iloc[-1]) if len(val) else np.nan,
                    "steps": int(c["step"].max()) if len(c) else 0,
                }
            )
        ax.set_title(f"width {fmt_value(w)}")
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.legend(fontsize=7, loc="upper right", framealpha=0.85)
    if not widths:
        empty_panel(axes[0], "no runs in the tables")
    finite = [x for x in all_losses if np.isfinite(x)]
    if finite:
        first = max(finite)
        lo = min(finite)
        axes[0].set_ylim(lo - 0.05 * (first - lo + 0.1), min(first, lo + 4 * (np.median(finite) - lo) + 0.5) + 0.05)
    axes[0].set_ylabel("training loss (smoothed); dots: validation")
    fig.suptitle("FP8 training: u-μP with plain FP8 casts vs u-μP, and μP with the same casts")
    save_figure(fig, out)
    return pd.DataFrame(
        records, columns=["width", "variant", "cell", "lr", "diverged", "final_val_loss", "last_val_loss", "steps"]
    )


__all__ = ["fp8_training"]
