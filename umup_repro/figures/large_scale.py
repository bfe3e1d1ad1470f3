"""Large-scale figure (`large_scale`, the paper's Fig. 6 setting): training loss against tokens,
a panel per model size, a line per scheme (SP-BF16, u-μP-BF16, u-μP-FP8)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from umup_repro.figures.style import empty_panel, panel_row, param_color, param_label, save_figure
from umup_repro.results.tables import pick_cell

SIZE_KEYS = ["model.width", "model.depth"]


def scheme(variant: str, precision: str) -> str:
    """`SP-BF16`, `u-μP-BF16`, `u-μP-FP8` (FP8 cells compute the rest in BF16)."""
    if "fp8" in variant:
        return param_label(variant.split("_fp8")[0]) + "-FP8"
    return param_label(variant) + ("-BF16" if precision == "bf16-mixed" else f"-{precision}")


def large_scale(metrics: pd.DataFrame, df: pd.DataFrame, out) -> pd.DataFrame:
    """Smoothed training loss vs tokens of each scheme, a panel per (width, depth); the table
    holds each line's final training and validation loss."""
    sizes = sorted({tuple(r) for r in df[SIZE_KEYS].dropna().itertuples(index=False)})
    m = metrics.copy()
    for c in ("step", "tokens", "train_loss", "val_loss"):
        if c in m:
            m[c] = pd.to_numeric(m[c], errors="coerce")
    fig, axes = panel_row(max(len(sizes), 1), 4.2, 3.5, sharey=False)
    records = []
    for ax, (width, depth) in zip(axes, sizes):
        here = df[(df["model.width"] == width) & (df["model.depth"] == depth)]
        for variant in dict.fromkeys(here["variant"]):
            for precision in dict.fromkeys(here.loc[here["variant"] == variant, "train.precision"]):
                cell = pick_cell(here[(here["variant"] == variant) & (here["train.precision"] == precision)])
                if cell is None:
                    continue
                c = m[m["cell"] == cell["cell"]].sort_values("step")
                train = c[np.isfinite(c["train_loss"])]
                smooth = train["train_loss"].rolling(max(1, len(train) // 20), min_periods=1).mean()
                name = scheme(variant, precision)
                ax.plot(
                    train["tokens"],
                    smooth,
                    lw=1.4,
                    color=param_color(variant),
                    label=name,
                    ls="--" if "fp8" in variant else "-",
                )
                records.append(
                    {
                        "width": width,
                        "depth": depth,
                        "parameters": cell.get("parameters", np.nan),
                        "scheme": name,
                        "cell": cell["cell"],
                        "lr": cell["train.lr"],
                        "diverged": bool(cell["diverged"]),
                        "final_train_loss": float(train["train_loss"].iloc[-1]) if len(train) else np.nan,
                        "final_val_loss": cell["loss"],
                        "tokens": int(c["tokens"].max()) if len(c) else 0,
                    }
                )
        ax.set_title(f"width {int(width)}, depth {int(depth)}")
        ax.set_xlabel("tokens")
        ax.legend(fontsize=7, loc="upper right", framealpha=0.85)
    if not sizes:
        empty_panel(axes[0], "no runs in the tables")
    axes[0].set_ylabel("training loss (smoothed)")
    fig.suptitle("Large scale: SP-BF16 vs u-μP-BF16 vs u-μP-FP8")
    save_figure(fig, out)
    return pd.DataFrame(
        records,
        columns=[
            "width",
            "depth",
            "parameters",
            "scheme",
            "cell",
            "lr",
            "diverged",
            "final_train_loss",
            "final_val_loss",
            "tokens",
        ],
    )


__all__ = ["large_scale"]
