"""The figures' shared look: names and colours of the parametrizations, HP labels, log2 axes,
the markers for diverged and off-scale points, legends and empty panels.

Figures are drawn without pyplot (`new_figure`) and saved as PDF + PNG, atomically (`save_figure`);
the notes' analyses use the same two.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib import ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from umup_repro.core import parametrizations
from umup_repro.core.atomic import atomic_call


def set_style() -> None:
    """One look for every analysis figure (seaborn's paper context on a white grid)."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.0)


def new_figure(**kwargs) -> Figure:
    """A figure that needs no pyplot (hence no GUI backend): safe in jobs and threads."""
    set_style()
    return Figure(constrained_layout=True, **kwargs)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> tuple[Path, Path]:
    """Save `fig` as `path` (PDF) and the PNG next to it, both atomically."""
    path = Path(path)
    png = path.with_suffix(".png")
    # tight bounding box: legends placed outside the axes (seaborn's) are kept, not clipped
    atomic_call(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "pdf", bbox_inches="tight"))
    atomic_call(png, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
    return path, png


# A parametrization's label and colour are its catalog entry's (umup_repro/core/parametrizations.py); the
# figures' other variants (a parametrization with model.fp8 set, or its FP8 scheme) are named here.
PARAM_ORDER = ("sp", "mup", "mup_fp8", "mup_fp8_all", "umup", "umup_fp8", "umup_fp8_all")
_VARIANT_LABEL = {
    "sp_fp8": "SP FP8",
    "mup_fp8": "μP FP8",
    "mup_fp8_all": "μP FP8 (all matmuls)",
    "umup_fp8_all": "u-μP FP8 (all matmuls)",
}
_VARIANT_COLOR = {"sp_fp8": "C5", "mup_fp8": "C9", "mup_fp8_all": "C4", "umup_fp8_all": "C6"}
PARAM_LABEL = {**{p.name: p.display for p in parametrizations.CATALOG.values()}, **_VARIANT_LABEL}
PARAM_COLOR = {**{p.name: p.color for p in parametrizations.CATALOG.values() if p.color}, **_VARIANT_COLOR}

HP_LABEL = {
    "alpha_ffn_act": r"$\alpha_{\mathrm{ffn\text{-}act}}$",
    "alpha_attn_softmax": r"$\alpha_{\mathrm{attn\text{-}softmax}}$",
    "alpha_res": r"$\alpha_{\mathrm{res}}$",
    "alpha_res_attn_ratio": r"$\alpha_{\mathrm{res\text{-}attn\text{-}ratio}}$",
    "alpha_loss_softmax": r"$\alpha_{\mathrm{loss\text{-}softmax}}$",
    "sigma_init": r"$\sigma_{\mathrm{init}}$",
    "alpha_emb": r"$\alpha_{\mathrm{emb}}$",
    "eta_emb": r"$\hat\eta_{\mathrm{emb}}$",
    "alpha_attn": r"$\alpha_{\mathrm{attn}}$",
    "alpha_out": r"$\alpha_{\mathrm{out}}$",
    "base_width": "base width",
    "base_depth": "base depth",
}

# Legend entries of the markers every loss figure may draw.
MARK_LEGEND = [
    Line2D([], [], marker="*", ls="", color="0.3", markeredgecolor="black", ms=10, label="optimum of a line"),
    Line2D([], [], marker="*", ls="", mfc="none", mec="0.3", ms=10, label="optimum at a grid edge (a bound)"),
    Line2D([], [], marker="x", ls="", color="0.3", ms=7, mew=1.5, label="diverged run"),
    Line2D([], [], marker="^", ls="", color="0.3", ms=6, label="loss above the y-range"),
]


# Tensor types in the model's order: the order of the per-tensor palette and legend.
_TYPE_ORDER = (
    "embedding",
    "attn_in",
    "attn.q_proj",
    "attn.k_proj",
    "attn.v_proj",
    "attn.core",
    "attn.out_proj",
    "attn_resid",
    "ffn_in",
    "ffn.up_proj",
    "ffn.gate_proj",
    "ffn.act",
    "ffn.down_proj",
    "ffn_resid",
    "final_norm",
    "readout",
)


def param_label(variant: str) -> str:
    """`umup_fp8` → `u-μP FP8`; unknown names as they are."""
    if variant in parametrizations.CATALOG:  # read at call time: an entry registered after import too
        return parametrizations.CATALOG[variant].display
    return _VARIANT_LABEL.get(variant, variant)


def param_color(variant: str) -> str | None:
    """A variant's colour (the catalog's for a parametrization); None = the default cycle."""
    if variant in parametrizations.CATALOG:
        return parametrizations.CATALOG[variant].color
    return _VARIANT_COLOR.get(variant)


def ordered_variants(values: Iterable[str]) -> list[str]:
    """Distinct parametrizations in the paper's order (SP, μP, u-μP), unknown ones last."""
    values = list(dict.fromkeys(values))
    return sorted(values, key=lambda v: (PARAM_ORDER.index(v) if v in PARAM_ORDER else len(PARAM_ORDER), v))


def fmt_pow2(x: float) -> str:
    """$2^{k}$ (mathtext) label for a positive number (k to one decimal unless whole)."""
    if not (x > 0 and math.isfinite(x)):
        return str(x)
    k = math.log2(x)
    # tables may round values (0.0039 for 2^-8): snap to the nearest half power within 0.01
    if abs(2 * k - round(2 * k)) < 0.02:
        k = round(2 * k) / 2
    return f"$2^{{{k:.0f}}}$" if k == int(k) else f"$2^{{{k:.1f}}}$"


def fmt_value(x) -> str:
    """Short text for an axis value: integers as is, powers of two of non-integers as 2^k."""
    x = float(x)
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    return fmt_pow2(x) if x > 0 else f"{x:g}"


def _pow2_label(v: float, _pos=None) -> str:
    return f"$2^{{{math.log2(v):.0f}}}$" if v > 0 else ""


def log2_xaxis(ax, values: Iterable[float], integer_ticks: bool = False) -> None:
    """log2 x-axis; ticks at the data (integers) or at whole powers of two (labelled 2^k)."""
    values = sorted({float(v) for v in values if v is not None and np.isfinite(v) and v > 0})
    ax.set_xscale("log", base=2)
    if not values:
        return
    if integer_ticks:
        ax.set_xticks(values)
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: fmt_value(v)))
    else:
        lo, hi = math.floor(math.log2(values[0]) + 1e-9), math.ceil(math.log2(values[-1]) - 1e-9)
        step = max(1, math.ceil((hi - lo + 1) / 8))
        ticks = [2.0**k for k in range(lo, hi + 1, step)]
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(_pow2_label))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    # every value in view (markers drawn in axes coordinates do not widen the limits themselves)
    pad = 2.0 ** (0.06 * math.log2(values[-1] / values[0])) if len(values) > 1 else 2.0
    ax.set_xlim(values[0] / pad, values[-1] * pad)


def log2_yaxis(ax) -> None:
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_locator(ticker.LogLocator(base=2, numticks=12))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(_pow2_label))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def mark_top(ax, xs, colors, marker: str, size: float = 40) -> None:
    """Markers at the top edge of `ax` at data x positions (diverged: ×, off-scale: ▲)."""
    if len(xs) == 0:
        return
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    ax.scatter(
        xs, [0.965] * len(xs), marker=marker, s=size, c=colors, transform=trans, clip_on=False, zorder=5, linewidths=1.5
    )


def empty_panel(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def type_colors(types: Iterable[str]) -> dict[str, tuple]:
    """A colour per tensor type (`tensor_type`), in the model's order."""
    import seaborn as sns

    types = sorted(set(types), key=lambda t: (_TYPE_ORDER.index(t) if t in _TYPE_ORDER else 99, t))
    palette = sns.color_palette("tab20", 20) if len(types) > 10 else sns.color_palette("tab10", 10)
    return {t: palette[i % len(palette)] for i, t in enumerate(types)}


def type_legend(fig, colors: dict, styles: dict | None = None, extra: Sequence = ()) -> None:
    """The tensor types' legend right of the panels (line styles from `styles`, else solid)."""
    handles = [Line2D([], [], color=c, lw=1.6, ls=(styles or {}).get(t, "-"), label=t) for t, c in colors.items()]
    fig.legend(
        handles=[*handles, *extra],
        loc="outside right center",
        fontsize=7,
        frameon=False,
        title="tensor (median over blocks)",
        title_fontsize=7,
    )


def panel_row(n: int, width: float, height: float, **subplots):
    """A figure of `n` panels side by side (one, empty, when n is 0), each `width` wide:
    (figure, axes)."""
    fig = new_figure(figsize=(width * max(n, 1) + 0.4, height))
    return fig, fig.subplots(1, max(n, 1), squeeze=False, **subplots)[0]


def bottom_legend(fig, handles: Sequence) -> None:
    """The marker legend under the panels."""
    fig.legend(handles=list(handles), loc="outside lower center", ncol=3, fontsize=8, frameon=False)


def label_edges(grid, row: int, col: int, xlabel: str, ylabel: str) -> None:
    """x label on the bottom row, y label on the left column of a grid of panels."""
    if row == grid.shape[0] - 1:
        grid[row, col].set_xlabel(xlabel)
    if col == 0:
        grid[row, col].set_ylabel(ylabel)


__all__ = [
    "HP_LABEL",
    "MARK_LEGEND",
    "PARAM_COLOR",
    "PARAM_LABEL",
    "PARAM_ORDER",
    "bottom_legend",
    "empty_panel",
    "fmt_pow2",
    "fmt_value",
    "label_edges",
    "log2_xaxis",
    "log2_yaxis",
    "mark_top",
    "new_figure",
    "ordered_variants",
    "panel_row",
    "param_color",
    "param_label",
    "save_figure",
    "type_colors",
    "type_legend",
]
