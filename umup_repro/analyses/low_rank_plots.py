"""Figures of the low-rank analysis (`low_rank.py` computes the curves, plateaus and overlaps):
loss curves per loss setting, optimiser, rank and weight decay, and the overlap of the learned
directions with the target's over time."""

from __future__ import annotations

import pandas as pd

from umup_repro.figures.style import new_figure, save_figure


def _setting_label(loss: str, ce_scale: float) -> str:
    if loss == "mse":
        return "MSE"
    return f"CE, p = softmax({'' if ce_scale == 1 else f'{ce_scale:g}·'}C)"


_OPT = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


def _panel(ax, curves, hue, hue_values, title, legend_title):
    palette = dict(zip(hue_values, ("C0", "C1", "C2", "C3", "C4")))
    for h in hue_values:
        g = curves[curves[hue] == h]
        if g.empty:
            continue
        ax.plot(g["step"], g["excess_rel_median"], color=palette[h], lw=1.4, label=f"{h:g}")
        ax.fill_between(g["step"], g["excess_rel_q10"], g["excess_rel_q90"], color=palette[h], alpha=0.2, lw=0)
    ax.set_xlim(0, curves["step"].max() if len(curves) else None)
    ax.set_yscale("log")
    ax.set_ylim(1e-6, 3)
    ax.axhline(0.5, color="0.5", lw=0.6, ls=":")
    ax.set_title(title, fontsize=9)
    ax.legend(title=legend_title, fontsize=7, title_fontsize=7, loc="lower left")
    ax.set_xlabel("step")


def plot(curves: pd.DataFrame, figure_path, plateaus: pd.DataFrame | None = None, *, n: int, alignment_rank: int):
    """Loss curves: top, λ = 0 per loss setting (rows) and optimiser (columns), hue = rank;
    bottom, MSE at rank `alignment_rank` per optimiser, hue = λ. Median and 10–90% seed band."""
    fig = new_figure(figsize=(11, 13))
    top, bottom = fig.subfigures(2, 1, height_ratios=[3, 1.15])
    settings = [
        (loss, s)
        for loss, s in (("mse", 1.0), ("ce", 1.0), ("ce", float(n)))
        if ((curves["loss"] == loss) & (curves["ce_scale"] == s)).any()
    ]
    opts = ["sgd", "adam"]
    axes = top.subplots(len(settings), len(opts), squeeze=False)
    ranks = sorted(curves["rank"].unique())
    for i, (loss, scale) in enumerate(settings):
        for j, opt in enumerate(opts):
            c = curves[
                (curves["loss"] == loss)
                & (curves["ce_scale"] == scale)
                & (curves["optimizer"] == opt)
                & (curves["weight_decay"] == 0)
            ]
            lr = c["lr"].iloc[0] if len(c) else float("nan")
            _panel(
                axes[i, j], c, "rank", ranks, f"{_setting_label(loss, scale)}, {_OPT[opt]} (lr {lr:g}), λ = 0", "rank"
            )
            axes[i, j].set_ylabel("excess loss / initial")
    top.suptitle(
        "Learning a rank-k 100×100 matrix with Z = X Yᵀ (r = 100, init σ 1e-3): median and 10–90% band over 10 seeds",
        fontsize=10,
    )
    mse = curves[(curves["loss"] == "mse") & (curves["rank"] == alignment_rank)]
    wds = sorted(mse["weight_decay"].unique())
    opts = [o for o in ("sgd", "adam", "adamw") if (mse["optimizer"] == o).any()]
    if opts:
        axes = bottom.subplots(1, len(opts), squeeze=False, sharey=True)[0]
        for ax, opt in zip(axes, opts):
            c = mse[mse["optimizer"] == opt]
            kind = {"sgd": "L2 in the gradient", "adam": "L2 in the gradient", "adamw": "decoupled"}[opt]
            _panel(ax, c, "weight_decay", wds, f"MSE, rank {alignment_rank}, {_OPT[opt]}: weight decay ({kind})", "λ")
        axes[0].set_ylabel("excess loss / initial")
        bottom.suptitle(
            "Weight decay and the initial plateau (dotted: half the initial excess, the plateau's end)", fontsize=10
        )
    return save_figure(fig, figure_path)


def plot_alignment(alignment: pd.DataFrame, figure_path, *, n: int, alignment_rank: int):
    """Overlap |⟨u_j, a_i⟩|² of learned direction j with target direction i over time (seed 0,
    rank `alignment_rank`, λ = 0), one panel per loss setting and optimiser; the singular values
    of Z on the right axis."""
    keys = alignment[["loss", "ce_scale", "optimizer"]].drop_duplicates()
    keys = keys[keys["optimizer"] != "adamw"]
    settings = [
        (loss, s)
        for loss, s in (("mse", 1.0), ("ce", 1.0), ("ce", float(n)))
        if ((keys["loss"] == loss) & (keys["ce_scale"] == s)).any()
    ]
    opts = [o for o in ("sgd", "adam") if (keys["optimizer"] == o).any()]
    fig = new_figure(figsize=(11, 3.2 * len(settings)))
    axes = fig.subplots(len(settings), len(opts), squeeze=False, sharex=True)
    styles = {(1, 1): ("C0", "-"), (1, 2): ("C0", "--"), (2, 1): ("C3", "--"), (2, 2): ("C3", "-")}
    for i, (loss, scale) in enumerate(settings):
        for j, opt in enumerate(opts):
            ax = axes[i, j]
            a = alignment[
                (alignment["loss"] == loss)
                & (alignment["ce_scale"] == scale)
                & (alignment["optimizer"] == opt)
                & (alignment["step"] > 0)
            ]
            for (lj, ti), g in a.groupby(["learned", "target"]):
                color, ls = styles.get((lj, ti), ("0.5", ":"))
                ax.plot(g["step"], g["overlap"], color=color, ls=ls, lw=1.3, label=f"learned {lj} · target {ti}")
            ax.set_xscale("log")
            ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel("|⟨u_j, a_i⟩|²")
            ax2 = ax.twinx()
            for lj, g in a[a["target"] == 1].groupby("learned"):
                ax2.plot(
                    g["step"], g["singular_value"], color="0.6", lw=0.8, ls="-" if lj == 1 else "--", label=f"σ_{lj}(Z)"
                )
            ax2.set_yscale("log")
            ax2.set_ylabel("singular value of Z", color="0.45")
            ax2.grid(False)
            ax.set_title(f"{_setting_label(loss, scale)}, {_OPT[opt]}", fontsize=9)
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = ax2.get_legend_handles_labels()
            ax.legend(h1 + h2, l1 + l2, fontsize=6.5, loc="center left")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    fig.suptitle(
        f"Rank-{alignment_rank} target, seed 0: overlap of the top learned directions "
        "(left singular vectors u_j of Z) with the target directions a_i",
        fontsize=10,
    )
    return save_figure(fig, figure_path)
