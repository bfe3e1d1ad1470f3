"""Search figures: best loss so far vs runs for random and staged search (`search_strategies`,
paper Fig. 1a) and the pairwise transfer error of each parametrization's HPs (`transfer_error`,
paper Fig. 4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.lines import Line2D

from umup_repro.figures.style import (
    HP_LABEL,
    MARK_LEGEND,
    bottom_legend,
    empty_panel,
    mark_top,
    new_figure,
    ordered_variants,
    panel_row,
    param_label,
    save_figure,
)

STAGE_LABEL = {"lr": "η", "hp": "each HP alone", "combined": "combined"}
CURVE_COLUMNS = ["variant", "strategy", "runs", "loss", "diverged", "best_so_far", "stage"]


def search_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Per parametrization and strategy (`search.kind`, else the sweep name), the runs in
    `search.index` order (seed replicates each count as a run) and the best (non-diverged) loss
    after each; `stage` is the staged search's stage (empty otherwise)."""
    df = df.copy()
    df["strategy"] = df["search.kind"].fillna(df["sweep"]) if "search.kind" in df else df["sweep"]
    df["strategy"] = df["strategy"].astype(str)
    stage = df["search.stage"] if "search.stage" in df else pd.Series("", index=df.index)
    df["stage"] = stage.fillna("").astype(str)
    order = "search.index" if "search.index" in df else "cell"
    rows = []
    for (v, s), g in df.groupby(["variant", "strategy"], sort=False):
        g = g.sort_values(order, kind="stable")
        best = g["loss"].cummin().ffill()  # a diverged run (NaN) keeps the best so far
        rows.append(
            pd.DataFrame(
                {
                    "variant": v,
                    "strategy": s,
                    "runs": np.arange(1, len(g) + 1),
                    "loss": g["loss"].to_numpy(),
                    "diverged": g["diverged"].to_numpy(),
                    "best_so_far": best.to_numpy(),
                    "stage": g["stage"].to_numpy(),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)[CURVE_COLUMNS] if rows else pd.DataFrame(columns=CURVE_COLUMNS)


def _ylim(curves: pd.DataFrame):
    """Every best-so-far curve from its second run on (a bad first run enters from the top)."""
    tails = [g["best_so_far"].iloc[min(1, len(g) - 1) :] for _, g in curves.groupby(["variant", "strategy"])]
    tail = pd.concat(tails).dropna() if tails else pd.Series(dtype=float)
    if not len(tail):
        return None
    lo, hi = tail.min(), tail.max()
    pad = 0.08 * max(hi - lo, 0.05)
    return lo - pad, hi + 3 * pad


def _mark_stages(ax, c: pd.DataFrame, color) -> None:
    """Dotted lines between a staged search's stages, their names on top, the combined run as ◆."""
    stages = c["stage"].tolist()
    for i in range(1, len(stages)):
        if stages[i] != stages[i - 1]:
            ax.axvline(i + 0.5, color=color, lw=0.8, ls=":", zorder=0)
    for name in dict.fromkeys(stages):
        at = c[c["stage"] == name]["runs"]
        if name and len(at):
            ax.text(
                at.mean(),
                1.0,
                STAGE_LABEL.get(name, name),
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=6.5,
                color=color,
            )
    combined = c[c["stage"] == "combined"]
    ax.scatter(
        combined["runs"], combined["loss"], marker="D", s=45, color=color, edgecolors="black", linewidths=0.7, zorder=7
    )


def search_strategies(df: pd.DataFrame, out) -> pd.DataFrame:
    """Best validation loss so far vs number of runs: random vs staged (or independent) search,
    a panel per parametrization; each run's own loss a faint dot, diverged runs × at the top,
    the staged search's stage boundaries dotted and its combined run a ◆."""
    curves = search_curves(df)
    variants = ordered_variants(curves["variant"])
    strategies = sorted(curves["strategy"].unique(), key=lambda s: (s != "random", s))
    colors = {s: c for s, c in zip(strategies, ("C0", "C3", "C2", "C4", "C5"))}
    labels = {
        "random": "random search",
        "staged": "staged search (η, then each HP, then combined)",
        "independent": "independent search (LR, then each HP)",
    }
    fig, axes = panel_row(len(variants), 4.2, 3.6, sharey=True)
    ylim = _ylim(curves)
    for ax, v in zip(axes, variants):
        for s in strategies:
            c = curves[(curves["variant"] == v) & (curves["strategy"] == s)]
            if c.empty:
                continue
            final = c["best_so_far"].iloc[-1]
            ax.step(
                c["runs"],
                c["best_so_far"],
                where="post",
                color=colors[s],
                lw=1.8,
                label=f"{labels.get(s, s)}: best {final:.3f} after {len(c)} runs",
            )
            ax.scatter(c["runs"], c["loss"], s=14, color=colors[s], alpha=0.5, lw=0)
            if ylim is not None:
                ax.set_ylim(*ylim)
                above = c[c["loss"] > ylim[1]]["runs"].tolist()
                mark_top(ax, above, [colors[s]] * len(above), "^", size=25)
            div = c[c["diverged"].astype(bool)]["runs"].tolist()
            mark_top(ax, div, [colors[s]] * len(div), "x")
            if (c["stage"] != "").any():
                _mark_stages(ax, c, colors[s])
        ax.set_title(param_label(v), pad=12)
        ax.set_xlabel("number of runs")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.legend(fontsize=6.5, loc="best", framealpha=0.85)
    if not variants:
        empty_panel(axes[0], "no runs in the tables")
    axes[0].set_ylabel("best validation loss so far")
    bottom_legend(
        fig,
        [
            Line2D([], [], marker="o", ls="", color="0.5", alpha=0.5, ms=4, label="one run's loss"),
            Line2D([], [], marker="D", ls="", color="0.5", markeredgecolor="black", ms=5, label="combined run"),
            *MARK_LEGEND[1:],
        ],
    )
    fig.suptitle("Hyperparameter search: best loss vs number of runs, random vs staged search")
    save_figure(fig, out)
    return curves


def _hp_label(key: str) -> str:
    hp = key.split(".", 1)[-1]
    return "η" if key == "train.lr" else HP_LABEL.get(hp, hp)


def transfer_error(table: pd.DataFrame, out) -> pd.DataFrame:
    """One heatmap per parametrization: the transfer error of each ordered pair (row: the fixed HP,
    column: the HP tuned at a wrong fixed value and transferred), the mean over pairs in the title;
    one colour scale for all panels."""
    table = table.copy()
    table["variant"] = table["parametrization"].astype(str)
    variants = ordered_variants(table["variant"])
    fig = new_figure(figsize=(3.8 * max(len(variants), 1) + 0.6, 3.6))
    axes = np.atleast_1d(fig.subplots(1, max(len(variants), 1), squeeze=False)[0])
    vmax = float(np.nanmax(table["transfer_error"])) if table["transfer_error"].notna().any() else 1.0
    rows = []
    image = None
    for ax, v in zip(axes, variants):
        g = table[table["variant"] == v]
        keys = list(dict.fromkeys([*g["hp_a"], *g["hp_b"]]))
        m = np.full((len(keys), len(keys)), np.nan)
        for r in g.itertuples():
            m[keys.index(r.hp_a), keys.index(r.hp_b)] = r.transfer_error
        image = ax.imshow(m, cmap="magma_r", vmin=0, vmax=max(vmax, 1e-9))
        ax.grid(False)
        for i in range(len(keys)):
            for j in range(len(keys)):
                if np.isfinite(m[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{m[i, j]:.3f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if m[i, j] > 0.6 * vmax else "black",
                    )
        labels = [_hp_label(k) for k in keys]
        ax.set_xticks(range(len(keys)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(keys)), labels)
        ax.set_xlabel("transferred HP")
        ax.set_ylabel("fixed HP")
        mean = float(g["transfer_error"].mean())
        ax.set_title(f"{param_label(v)}: mean transfer error {mean:.4f}")
        rows.append(
            {
                "variant": v,
                "pairs": len(g),
                "mean_transfer_error": mean,
                "max_transfer_error": float(g["transfer_error"].max()),
            }
        )
    if not variants:
        empty_panel(axes[0], "no pairs in transfer_error.csv")
    elif image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="transfer error (loss)")
    fig.suptitle("Pairwise transfer error (paper Alg. 1): loss lost by tuning one HP with another at a wrong value")
    save_figure(fig, out)
    return pd.DataFrame(rows, columns=["variant", "pairs", "mean_transfer_error", "max_transfer_error"])


__all__ = ["search_curves", "search_strategies", "transfer_error"]
