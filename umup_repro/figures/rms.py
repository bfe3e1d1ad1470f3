"""Per-tensor RMS figures (weights, activations, gradients; median over blocks): at
initialisation across width (`rms_init`), over training steps (`rms_training`), and at the end
of training against each swept hyperparameter (`rms_end`, paper Fig. 14). FP8 formats' normal
ranges are shaded where they matter."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from umup_repro.figures.style import (
    empty_panel,
    fmt_pow2,
    fmt_value,
    label_edges,
    log2_xaxis,
    log2_yaxis,
    mark_top,
    new_figure,
    ordered_variants,
    param_label,
    save_figure,
    type_colors,
    type_legend,
)
from umup_repro.results.tables import RMS_END_AXIS_LABEL, median_over_blocks, pick_cell, rms_long, tensor_group

# FP8 normal ranges (smallest normal, largest finite): the bands of the RMS figures.
E4M3_RANGE = (2.0**-6, 448.0)
E5M2_RANGE = (2.0**-14, 57344.0)

# The axes of the end-of-training RMS figure (paper Fig. 14), in column order.
RMS_END_AXES = (
    ("train.lr", "learning rate η"),
    ("model.width", "width"),
    ("model.depth", "depth"),
    ("train.steps", "training steps"),
    ("train.batch_size", "batch size"),
)
RMS_KINDS = ("weight", "activation", "grad")
RMS_KIND_LABEL = {"weight": "weights", "activation": "activations", "grad": "gradients"}

_BAND_LEGEND = [
    Patch(color="tab:green", alpha=0.25, label=r"E4M3 normal range $[2^{-6}, 448]$"),
    Patch(color="tab:purple", alpha=0.18, label=r"E5M2 normal range $[2^{-14}, 57344]$"),
]


def _fp8_bands(ax) -> None:
    ax.axhspan(*E5M2_RANGE, color="tab:purple", alpha=0.07, lw=0, zorder=0)
    ax.axhspan(*E4M3_RANGE, color="tab:green", alpha=0.10, lw=0, zorder=0)


def _kinds(data: pd.DataFrame) -> list[str]:
    """The RMS kinds in the data, in the figures' column order (all three when there are none)."""
    return [k for k in RMS_KINDS if k in set(data["kind"])] or list(RMS_KINDS)


def _type_lines(
    ax, g: pd.DataFrame, x: str, colors: dict, styles: dict | None = None, sparse_marker: str | None = None, **plot_kw
) -> None:
    """A line of RMS vs `x` per tensor type in `g`; `styles` gives line styles, and a line of
    fewer than 8 points gets `sparse_marker` markers so it stays visible."""
    for t, tg in g.groupby("type"):
        tg = tg.sort_values(x)
        kw = dict(plot_kw)
        if styles is not None:
            kw["ls"] = styles[t]
        if sparse_marker is not None:
            kw["marker"] = sparse_marker if len(tg) < 8 else None
        ax.plot(tg[x], tg["rms"], color=colors[t], **kw)


def rms_init(rms: pd.DataFrame, df: pd.DataFrame, out) -> pd.DataFrame:
    """Per-tensor RMS at step 0 vs width: a row per parametrization, a column per kind
    (weights, activations, gradients), E4M3/E5M2 normal ranges shaded, log2 y-axis."""
    long = rms_long(rms, df)
    long = long[long["step"] == long.groupby("cell")["step"].transform("min")]
    data = median_over_blocks(long, ["variant", "model.width"])
    variants = ordered_variants(data["variant"])
    kinds = _kinds(data)
    colors = type_colors(data["type"])
    fig = new_figure(figsize=(3.3 * len(kinds) + 1.8, 2.9 * max(len(variants), 1) + 0.3))
    grid = fig.subplots(max(len(variants), 1), len(kinds), squeeze=False, sharey=True, sharex=True)
    lo = min(data["rms"].min() / 2, E5M2_RANGE[0] / 4) if len(data) else E5M2_RANGE[0] / 4
    hi = max(data["rms"].max() * 2, E5M2_RANGE[1] * 4) if len(data) else E5M2_RANGE[1] * 4
    for i, v in enumerate(variants):
        for j, kind in enumerate(kinds):
            ax = grid[i, j]
            _fp8_bands(ax)
            g = data[(data["variant"] == v) & (data["kind"] == kind)]
            _type_lines(ax, g, "model.width", colors, marker="o", ms=3, lw=1.2)
            log2_xaxis(ax, data["model.width"], integer_ticks=True)
            log2_yaxis(ax)
            ax.set_ylim(lo, hi)
            ax.set_title(f"{param_label(v)}: {RMS_KIND_LABEL[kind]}")
            label_edges(grid, i, j, "width (log₂ scale)", "RMS at initialisation (log₂)")
    if not variants:
        empty_panel(grid[0, 0], "no RMS rows in the tables")
    type_legend(fig, colors, extra=_BAND_LEGEND)
    fig.suptitle("Per-tensor RMS at initialisation across width, with the FP8 formats' normal ranges")
    save_figure(fig, out)
    return data.rename(columns={"model.width": "width"})


def rms_training(rms: pd.DataFrame, df: pd.DataFrame, out) -> pd.DataFrame:
    """RMS over training steps of the FFN (solid) and decoder (dashed) tensors, at the largest
    width in the sweep (its best-loss LR): a row per parametrization, a column per kind."""
    long = rms_long(rms, df)
    width = long["model.width"].max() if len(long) else None
    picked = {}
    for v in ordered_variants(long["variant"]):
        cell = pick_cell(df[(df["variant"] == v) & (df["model.width"] == width)])
        if cell is not None:
            picked[v] = cell
    sel = long[long["cell"].isin([c["cell"] for c in picked.values()]) & (long["group"] != "attention")]
    data = median_over_blocks(sel, ["variant", "cell", "step"])
    kinds = _kinds(data)
    colors = type_colors(data["type"])
    styles = {t: ("-" if tensor_group(t) == "FFN" else "--") for t in colors}
    fig = new_figure(figsize=(3.4 * len(kinds) + 1.8, 2.8 * max(len(picked), 1) + 0.3))
    grid = fig.subplots(max(len(picked), 1), len(kinds), squeeze=False, sharex=True)
    for i, (v, cell) in enumerate(picked.items()):
        for j, kind in enumerate(kinds):
            ax = grid[i, j]
            g = data[(data["variant"] == v) & (data["kind"] == kind)]
            _type_lines(ax, g, "step", colors, styles, sparse_marker=".", lw=1.3)
            if len(g):
                ylo, yhi = g["rms"].min() / 2, g["rms"].max() * 2
                _fp8_bands(ax)
                log2_yaxis(ax)
                ax.set_ylim(ylo, yhi)
            div = " (diverged)" if bool(cell["diverged"]) else ""
            ax.set_title(f"{param_label(v)}, η={fmt_pow2(cell['train.lr'])}{div}: {RMS_KIND_LABEL[kind]}", fontsize=9)
            label_edges(grid, i, j, "training step", "RMS (log₂)")
    if not picked:
        empty_panel(grid[0, 0], "no RMS rows in the tables")
    style_legend = [
        Line2D([], [], color="0.3", ls="-", label="FFN tensor"),
        Line2D([], [], color="0.3", ls="--", label="decoder tensor"),
    ]
    type_legend(fig, colors, styles, extra=[*style_legend, *_BAND_LEGEND])
    fig.suptitle(
        f"RMS during training, FFN and decoder tensors (width {fmt_value(width) if width else '?'}; "
        "shaded: FP8 normal ranges where in view)"
    )
    save_figure(fig, out)
    return data


def rms_end(rms: pd.DataFrame, df: pd.DataFrame, out, parametrization: str = "umup") -> pd.DataFrame:
    """End-of-training RMS per tensor type vs LR, width, depth, steps and batch size (paper
    Fig. 14): u-μP cells pooled over the sweeps; along each axis the other axes sit at the base
    point (the most common value of each) and, off the LR axis, the LR nearest the default."""
    from umup_repro.core.config import DEFAULT_LR

    variants = ordered_variants(df["variant"])
    param = parametrization if parametrization in variants else (variants[0] if variants else parametrization)
    cells = df[df["variant"] == param].drop_duplicates("cell")  # pooled: shared cells once
    axes = [(c, lab) for c, lab in RMS_END_AXES if c in cells and cells[c].nunique() > 1]
    base = {c: cells[c].mode().iloc[0] for c, _ in RMS_END_AXES if c in cells and len(cells)}
    if "train.lr" in base:
        lrs = np.array(sorted(cells["train.lr"].dropna().unique()), dtype=float)
        target = DEFAULT_LR.get(param, base["train.lr"])
        base["train.lr"] = float(lrs[np.argmin(np.abs(np.log2(lrs) - math.log2(target)))])
    long = rms_long(rms, cells)
    long = long[long["step"] == long.groupby("cell")["step"].transform("max")]
    frames = []
    for col, _ in axes:
        mask = np.ones(len(cells), dtype=bool)
        for other, value in base.items():
            if other != col:
                mask &= np.isclose(cells[other].astype(float), float(value))
        sel = cells[mask]
        pts = median_over_blocks(long[long["cell"].isin(sel["cell"])], [col, "step"])
        pts = pts.rename(columns={col: "value"})
        pts["axis"] = col
        frames.append(pts)
    data = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["axis", "value", "kind", "type", "group", "rms"])
    )
    kinds = _kinds(data)
    colors = type_colors(data["type"])
    ncols = max(len(axes), 1)
    fig = new_figure(figsize=(2.9 * ncols + 1.8, 2.6 * len(kinds) + 0.3))
    grid = fig.subplots(len(kinds), ncols, squeeze=False, sharey="row")
    for j, (col, label) in enumerate(axes):
        diverged = cells[cells["diverged"]]
        for i, kind in enumerate(kinds):
            ax = grid[i, j]
            g = data[(data["axis"] == col) & (data["kind"] == kind)]
            _type_lines(ax, g, "value", colors, marker="o", ms=2.5, lw=1.1)
            log2_xaxis(ax, cells[col], integer_ticks=(col != "train.lr"))
            log2_yaxis(ax)
            if col == "train.lr":
                ax.axvline(base[col], color="0.6", lw=0.8, ls=":", zorder=0)
            dx = diverged[col].tolist() if col == "train.lr" else []
            mark_top(ax, dx, ["0.2"] * len(dx), "x")
            if i == 0:
                fixed = ", ".join(
                    f"{RMS_END_AXIS_LABEL[c]}={fmt_pow2(base[c]) if c == 'train.lr' else fmt_value(base[c])}"
                    for c, _ in RMS_END_AXES
                    if c in base and c != col
                )
                ax.set_title(f"vs {label}\n({fixed})", fontsize=8)
            label_edges(grid, i, j, f"{label} (log₂ scale)", f"final RMS, {RMS_KIND_LABEL[kind]}")
    if not axes:
        empty_panel(grid[0, 0], "no swept axis in the tables")
    type_legend(fig, colors, extra=[Line2D([], [], marker="x", ls="", color="0.2", label="diverged run")])
    if len(data) and "train.steps" in long:
        last = long.groupby("cell").agg(step=("step", "max"), steps=("train.steps", "first"))
        early = last[last["step"] < 0.75 * last["steps"]]
        if len(early):
            fig.text(
                0.01,
                -0.01,
                f"note: {len(early)} of {len(last)} cells logged their last RMS before their last "
                f"step (e.g. step {int(early['step'].iloc[0])} of {int(early['steps'].iloc[0])}); "
                "their points show the RMS there",
                fontsize=7,
                color="0.35",
                ha="left",
                va="top",
            )
    fig.suptitle(
        f"{param_label(param)}: per-tensor RMS at the end of training vs each swept "
        "hyperparameter (others at the base point)"
    )
    save_figure(fig, out)
    return data


__all__ = ["E4M3_RANGE", "E5M2_RANGE", "RMS_END_AXES", "RMS_KINDS", "rms_end", "rms_init", "rms_training"]
