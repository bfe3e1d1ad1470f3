"""Loss against one swept value, a line per value of another, each line's optimum starred: the
panel the LR-transfer and HP-transfer figures share.

A diverged cell is drawn as an × at the top of its panel at its x value, and a finite loss above
the panel's y-range as a ▲ there, so no cell disappears silently.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from umup_repro.figures.style import fmt_pow2, fmt_value, log2_xaxis, mark_top


def loss_ylim(losses: Iterable[float]) -> tuple[float, float] | None:
    """y-range that keeps every line's optimum readable: from the best loss to the largest loss,
    capped at best + 3·(median − best) (points above are drawn as ▲ at the top)."""
    v = np.array([x for x in losses if np.isfinite(x)], dtype=float)
    if v.size == 0:
        return None
    best, worst, med = v.min(), v.max(), float(np.median(v))
    hi = min(worst, best + max(3 * (med - best), 0.25))
    pad = 0.06 * max(hi - best, 0.05)
    return best - pad, hi + 2.5 * pad


def _line_palette(n: int):
    import seaborn as sns

    return sns.color_palette("viridis", n) if n > 1 else [sns.color_palette("viridis", 3)[0]]


def _plot_loss_lines(ax, df: pd.DataFrame, *, x: str, line: str, line_name: str, x_is_lr: bool = True) -> list[dict]:
    """Loss vs `x` (log2), one line per value of `line`, the optimum of each line starred.
    Returns one dict per line: its value, the optimum x and loss, runs and diverged runs
    (keys starting with `_` are for `_finish_loss_panel`, `records` drops them)."""
    values = sorted(df[line].dropna().unique())
    colors = dict(zip(values, _line_palette(len(values))))
    out = []
    for value in values:
        g = df[df[line] == value].sort_values(x)
        ok = g[g["loss"].notna()]
        # duplicate x (seed replicates, a base point repeated in a search): mean loss at that x,
        # its standard error drawn as an error bar where there are several
        pts = ok.groupby(x, as_index=False)["loss"].agg(loss="mean", se="sem", n="count")
        row = {"line": value, "runs": len(g), "diverged": int(g["diverged"].sum()), "x_opt": np.nan, "loss_opt": np.nan}
        row["censored"] = ""
        label = f"{line_name} {fmt_value(value)}"
        if len(pts):
            best = pts.loc[pts["loss"].idxmin()]
            # at the grid's edge (diverged points count as grid): the optimum is a bound, drawn hollow
            # (the transfer summary's `censored`, umup_repro/results/optimum.py)
            if g[x].nunique() > 1 and best[x] in (g[x].min(), g[x].max()):
                row["censored"] = "lower" if best[x] == g[x].min() else "upper"
            row.update(x_opt=float(best[x]), loss_opt=float(best["loss"]))
            shown = fmt_pow2(best[x]) if x_is_lr else fmt_value(best[x])
            label += f": best at {shown}" + {"lower": " (≤, grid edge)", "upper": " (≥, grid edge)"}.get(
                row["censored"], ""
            )
            ax.plot(pts[x], pts["loss"], marker="o", ms=3.5, lw=1.4, color=colors[value], label=label)
            spread = pts[pts["n"] > 1]
            if len(spread):
                ax.errorbar(
                    spread[x],
                    spread["loss"],
                    yerr=spread["se"],
                    fmt="none",
                    ecolor=colors[value],
                    elinewidth=0.9,
                    capsize=2,
                    zorder=5,
                )
            ax.scatter(
                [best[x]],
                [best["loss"]],
                marker="*",
                s=130,
                facecolors="none" if row["censored"] else colors[value],
                edgecolors=colors[value] if row["censored"] else "black",
                linewidths=1.2 if row["censored"] else 0.6,
                zorder=6,
            )
        else:
            ax.plot([], [], marker="o", ms=3.5, lw=1.4, color=colors[value], label=label + " (all diverged)")
        row["_color"] = colors[value]
        row["_diverged_x"] = g.loc[g["diverged"], x].tolist()
        row["_points"] = pts
        out.append(row)
    return out


def _finish_loss_panel(ax, rows: list[dict], ylim, *, x: str) -> None:
    """Apply the shared y-range; mark diverged (×) and off-scale (▲) points at the top."""
    if ylim is not None:
        ax.set_ylim(*ylim)
    for r in rows:
        mark_top(ax, r["_diverged_x"], [r["_color"]] * len(r["_diverged_x"]), "x")
        if ylim is not None:
            above = r["_points"][r["_points"]["loss"] > ylim[1]][x].tolist()
            mark_top(ax, above, [r["_color"]] * len(above), "^", size=30)


def loss_panel(ax, df: pd.DataFrame, ylim, *, x: str, line: str, line_name: str, x_is_lr: bool = True) -> list[dict]:
    """One panel: the lines of `_plot_loss_lines` in the shared y-range `ylim`, diverged and
    off-scale points marked at the top, a log2 x-axis over the panel's values."""
    rows = _plot_loss_lines(ax, df, x=x, line=line, line_name=line_name, x_is_lr=x_is_lr)
    _finish_loss_panel(ax, rows, ylim, x=x)
    log2_xaxis(ax, df[x])
    return rows


def records(rows: list[dict], **extra) -> list[dict]:
    """`plot_loss_lines`' rows without their drawing keys, `extra` columns first."""
    return [{**extra, **{k: v for k, v in r.items() if not k.startswith("_")}} for r in rows]
