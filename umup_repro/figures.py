"""Tables → figures: one function per figure of the replication, one shared style.

Every figure reads the aggregated tables under `results/tables/` (DESIGN.md):

- `<sweep>.csv`: one row per cell (flattened config, `search.*` columns, summary metrics),
- `metrics/<sweep>.csv`: `cell` + the run's `step, tokens, train_loss, val_loss, lr` (long),
- `rms/<sweep>.csv`: `cell` + the run's `step, tensor, kind, rms` (long),

and writes `<out>.pdf` plus the PNG next to it (atomically, `analyses._common.save_figure`).
Each function returns a DataFrame of what it plotted (the optimum of each line, the best loss
so far, the RMS values drawn, ...) so tests and logs can check the figure against its tables.

"Loss" is `final_val_loss`. A diverged cell (`diverged` true) never counts as a loss, whatever
its table holds; it is drawn as an × at the top of its panel at its x value, and a finite loss
above the panel's y-range as a ▲ there, so no cell disappears silently.

`plot(name, tables, sweeps, out)` is what `umup-repro plot NAME` and the Snakemake rules call.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from umup_repro.analyses._common import new_figure, save_figure

LOSS = "final_val_loss"
PARAM_ORDER = ("sp", "mup", "mup_fp8", "umup", "umup_fp8")
PARAM_LABEL = {"sp": "SP", "sp_fp8": "SP FP8", "mup": "μP", "mup_fp8": "μP FP8", "umup": "u-μP",
               "umup_fp8": "u-μP FP8"}
PARAM_COLOR = {"sp": "C7", "sp_fp8": "C5", "mup": "C0", "mup_fp8": "C9", "umup": "C3", "umup_fp8": "C1"}

# FP8 normal ranges (smallest normal, largest finite): the bands of the RMS figures.
E4M3_RANGE = (2.0**-6, 448.0)
E5M2_RANGE = (2.0**-14, 57344.0)

# What each LR-transfer figure puts on its lines (figure name → config column, label).
TRANSFER_AXES = {
    "transfer_width": ("model.width", "width"),
    "transfer_depth": ("model.depth", "depth"),
    "transfer_batch": ("train.batch_size", "batch size"),
    "transfer_steps": ("train.steps", "training steps"),
}
# The axes of the end-of-training RMS figure (paper Fig. 14), in column order.
RMS_END_AXES = (("train.lr", "learning rate η"), ("model.width", "width"), ("model.depth", "depth"),
                ("train.steps", "training steps"), ("train.batch_size", "batch size"))
_SHORT = {"train.lr": "η", "model.width": "width", "model.depth": "depth", "train.steps": "steps",
          "train.batch_size": "batch"}
RMS_KINDS = ("weight", "activation", "grad")
RMS_KIND_LABEL = {"weight": "weights", "activation": "activations", "grad": "gradients"}

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
EMB_RULE_LABEL = {"inv_sqrt_fan_out": r"$c_{\mathrm{emb}} = 1/\sqrt{\mathrm{fan\_out}}$ (u-μP's rule)",
                  "constant": r"$c_{\mathrm{emb}} = 1$ (μP's rule)"}


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

def _as_bool(series: pd.Series) -> pd.Series:
    """CSV booleans (True/False, true/false, 1/0, empty) → bool (empty: False)."""
    if series.dtype == bool:
        return series
    return series.map(lambda v: str(v).strip().lower() in ("true", "1", "1.0", "yes"))


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Normalise a main table: boolean `diverged`, `loss` (NaN where diverged or not finite),
    `variant` (the parametrization, `mup_fp8` for μP with `model.fp8`)."""
    df = df.copy()
    df["diverged"] = _as_bool(df["diverged"]) if "diverged" in df else False
    loss = pd.to_numeric(df[LOSS], errors="coerce") if LOSS in df else pd.Series(np.nan, index=df.index)
    df["loss"] = loss.where(~df["diverged"] & np.isfinite(loss))
    fp8 = _as_bool(df["model.fp8"]) if "model.fp8" in df else pd.Series(False, index=df.index)
    df["variant"] = [p if p.endswith("_fp8") or not f else f"{p}_fp8"
                     for p, f in zip(df["parametrization"].astype(str), fp8)]
    if "cell" in df:  # a table listed twice; a cell shared by two sweeps stays in both
        df = df.drop_duplicates(["cell", "sweep"] if "sweep" in df else ["cell"])
    return df.reset_index(drop=True)


def load_table(tables: str | os.PathLike, sweeps: Sequence[str], kind: str = "main") -> pd.DataFrame:
    """The sweeps' tables of one kind (`main`, `metrics`, `rms`) stacked; `sweep` column added
    where missing. A main table is passed through `prepare`."""
    tables = Path(tables)
    frames = []
    for sweep in sweeps:
        path = tables / f"{sweep}.csv" if kind == "main" else tables / kind / f"{sweep}.csv"
        if not path.exists():
            raise FileNotFoundError(f"figures: table {path} is missing (sweep {sweep!r}); run the aggregate rule")
        df = pd.read_csv(path)
        if "sweep" not in df:
            df["sweep"] = sweep
        frames.append(df)
    if not frames:
        raise ValueError("figures: no sweeps given")
    df = pd.concat(frames, ignore_index=True)
    return prepare(df) if kind == "main" else df


def _ordered_variants(values: Iterable[str]) -> list[str]:
    values = list(dict.fromkeys(values))
    return sorted(values, key=lambda v: (PARAM_ORDER.index(v) if v in PARAM_ORDER else len(PARAM_ORDER), v))


def tensor_type(name: str) -> str:
    """`blocks.3.ffn.up_proj.weight` → `ffn.up_proj`; `embedding.weight` → `embedding`."""
    name = re.sub(r"^blocks\.\d+\.", "", str(name))
    return re.sub(r"\.weight$", "", name)


def tensor_group(ttype: str) -> str:
    """FFN internals, attention internals, or the decoder's stream (embedding, norms' inputs,
    residual branches' outputs, final norm, readout)."""
    if ttype.startswith("ffn."):
        return "FFN"
    if ttype.startswith("attn."):
        return "attention"
    return "decoder"


_TYPE_ORDER = ("embedding", "attn_in", "attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.core",
               "attn.out_proj", "attn_resid", "ffn_in", "ffn.up_proj", "ffn.gate_proj", "ffn.act",
               "ffn.down_proj", "ffn_resid", "final_norm", "readout")


def _type_colors(types: Iterable[str]) -> dict[str, tuple]:
    import seaborn as sns

    types = sorted(set(types), key=lambda t: (_TYPE_ORDER.index(t) if t in _TYPE_ORDER else 99, t))
    palette = sns.color_palette("tab20", 20) if len(types) > 10 else sns.color_palette("tab10", 10)
    return {t: palette[i % len(palette)] for i, t in enumerate(types)}


def rms_long(rms: pd.DataFrame, main: pd.DataFrame) -> pd.DataFrame:
    """RMS rows joined with their cell's config; `type` (tensor kind without block index) and
    `group` added. Values that are not positive and finite are dropped (log axes)."""
    keep = [c for c in ("cell", "variant", "diverged", "loss", "model.width", "model.depth", "train.lr",
                        "train.steps", "train.batch_size") if c in main]
    rms = rms.drop_duplicates(["cell", "step", "tensor", "kind"])  # cells shared between sweeps
    df = rms.merge(main[keep].drop_duplicates("cell"), on="cell", how="inner")
    df["rms"] = pd.to_numeric(df["rms"], errors="coerce")
    df = df[np.isfinite(df["rms"]) & (df["rms"] > 0)].copy()
    df["type"] = df["tensor"].map(tensor_type)
    df["group"] = df["type"].map(tensor_group)
    return df


def _median_over_blocks(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Median RMS over the blocks (and duplicate cells) of each tensor type."""
    return df.groupby(by + ["kind", "type", "group"], as_index=False)["rms"].median()


# --------------------------------------------------------------------------------------------
# Axes helpers
# --------------------------------------------------------------------------------------------

def _fmt_pow2(x: float) -> str:
    """$2^{k}$ (mathtext) label for a positive number (k to one decimal unless whole)."""
    if not (x > 0 and math.isfinite(x)):
        return str(x)
    k = math.log2(x)
    # tables may round values (0.0039 for 2^-8): snap to the nearest half power within 0.01
    if abs(2 * k - round(2 * k)) < 0.02:
        k = round(2 * k) / 2
    return f"$2^{{{k:.0f}}}$" if k == int(k) else f"$2^{{{k:.1f}}}$"


def _fmt_value(x) -> str:
    """Short text for an axis value: integers as is, powers of two of non-integers as 2^k."""
    x = float(x)
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    return _fmt_pow2(x) if x > 0 else f"{x:g}"


def _log2_xaxis(ax, values: Iterable[float], integer_ticks: bool = False) -> None:
    """log2 x-axis; ticks at the data (integers) or at whole powers of two (labelled 2^k)."""
    values = sorted({float(v) for v in values if v is not None and np.isfinite(v) and v > 0})
    ax.set_xscale("log", base=2)
    if not values:
        return
    if integer_ticks:
        ax.set_xticks(values)
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _fmt_value(v)))
    else:
        lo, hi = math.floor(math.log2(values[0]) + 1e-9), math.ceil(math.log2(values[-1]) - 1e-9)
        step = max(1, math.ceil((hi - lo + 1) / 8))
        ticks = [2.0**k for k in range(lo, hi + 1, step)]
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(
            lambda v, _: f"$2^{{{math.log2(v):.0f}}}$" if v > 0 else ""))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    # every value in view (markers drawn in axes coordinates do not widen the limits themselves)
    pad = 2.0 ** (0.06 * math.log2(values[-1] / values[0])) if len(values) > 1 else 2.0
    ax.set_xlim(values[0] / pad, values[-1] * pad)


def _log2_yaxis(ax) -> None:
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_locator(ticker.LogLocator(base=2, numticks=12))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"$2^{{{math.log2(v):.0f}}}$" if v > 0 else ""))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def _loss_ylim(losses: Iterable[float]) -> tuple[float, float] | None:
    """y-range that keeps every line's optimum readable: from the best loss to the largest loss,
    capped at best + 3·(median − best) (points above are drawn as ▲ at the top)."""
    v = np.array([x for x in losses if np.isfinite(x)], dtype=float)
    if v.size == 0:
        return None
    best, worst, med = v.min(), v.max(), float(np.median(v))
    hi = min(worst, best + max(3 * (med - best), 0.25))
    pad = 0.06 * max(hi - best, 0.05)
    return best - pad, hi + 2.5 * pad


def _mark_top(ax, xs, colors, marker: str, size: float = 40) -> None:
    """Markers at the top edge of `ax` at data x positions (diverged: ×, off-scale: ▲)."""
    if len(xs) == 0:
        return
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    ax.scatter(xs, [0.965] * len(xs), marker=marker, s=size, c=colors, transform=trans, clip_on=False,
               zorder=5, linewidths=1.5)


def _line_palette(n: int):
    import seaborn as sns

    return sns.color_palette("viridis", n) if n > 1 else [sns.color_palette("viridis", 3)[0]]


def _plot_loss_lines(ax, df: pd.DataFrame, *, x: str, line: str, line_name: str,
                     x_is_lr: bool = True) -> list[dict]:
    """Loss vs `x` (log2), one line per value of `line`, the optimum of each line starred.
    Returns one dict per line: its value, the optimum x and loss, runs and diverged runs."""
    values = sorted(df[line].dropna().unique())
    colors = dict(zip(values, _line_palette(len(values))))
    out = []
    for value in values:
        g = df[df[line] == value].sort_values(x)
        ok = g[g["loss"].notna()]
        # duplicate x (a base point repeated in a search): mean loss at that x
        pts = ok.groupby(x, as_index=False)["loss"].mean()
        row = {"line": value, "runs": len(g), "diverged": int(g["diverged"].sum()),
               "x_opt": np.nan, "loss_opt": np.nan}
        label = f"{line_name} {_fmt_value(value)}"
        if len(pts):
            best = pts.loc[pts["loss"].idxmin()]
            row.update(x_opt=float(best[x]), loss_opt=float(best["loss"]))
            label += f": best at {_fmt_pow2(best[x]) if x_is_lr else _fmt_value(best[x])}"
            ax.plot(pts[x], pts["loss"], marker="o", ms=3.5, lw=1.4, color=colors[value], label=label)
            ax.scatter([best[x]], [best["loss"]], marker="*", s=130, color=colors[value],
                       edgecolors="black", linewidths=0.6, zorder=6)
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
        _mark_top(ax, r["_diverged_x"], [r["_color"]] * len(r["_diverged_x"]), "x")
        if ylim is not None:
            above = r["_points"][r["_points"]["loss"] > ylim[1]][x].tolist()
            _mark_top(ax, above, [r["_color"]] * len(above), "^", size=30)


_MARK_LEGEND = [Line2D([], [], marker="*", ls="", color="0.3", markeredgecolor="black", ms=10,
                       label="optimum of a line"),
                Line2D([], [], marker="x", ls="", color="0.3", ms=7, mew=1.5, label="diverged run"),
                Line2D([], [], marker="^", ls="", color="0.3", ms=6, label="loss above the y-range")]


def _clean(rows: list[dict], **extra) -> list[dict]:
    return [{**extra, **{k: v for k, v in r.items() if not k.startswith("_")}} for r in rows]


def _empty_panel(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


# --------------------------------------------------------------------------------------------
# Loss vs LR: transfer across width, depth, batch size, steps; embedding LR rule
# --------------------------------------------------------------------------------------------

def _loss_vs_lr_panels(df: pd.DataFrame, *, panel: str, panels: list, panel_title: Callable,
                       line: str, line_name: str, suptitle: str, out, x: str = "train.lr",
                       x_label: str = "learning rate η (log₂ scale)") -> pd.DataFrame:
    fig = new_figure(figsize=(3.5 * max(len(panels), 1) + 0.4, 3.4))
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False, sharey=True)[0]
    ylim = _loss_ylim(df["loss"])
    records = []
    for ax, p in zip(axes, panels):
        g = df[df[panel] == p]
        rows = _plot_loss_lines(ax, g, x=x, line=line, line_name=line_name)
        _finish_loss_panel(ax, rows, ylim, x=x)
        _log2_xaxis(ax, g[x])
        ax.set_title(panel_title(p))
        ax.set_xlabel(x_label)
        ax.legend(fontsize=7, loc="lower left" if len(rows) > 3 else "best", framealpha=0.85)
        records += _clean(rows, panel=p)
    if not panels:
        _empty_panel(axes[0], "no runs in the tables")
    axes[0].set_ylabel("final validation loss")
    fig.legend(handles=_MARK_LEGEND, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(suptitle)
    save_figure(fig, out)
    return pd.DataFrame(records, columns=["panel", "line", "x_opt", "loss_opt", "runs", "diverged"])


def transfer(name: str, df: pd.DataFrame, out) -> pd.DataFrame:
    """Loss vs LR, a line per value of the figure's axis, a panel per parametrization."""
    axis, axis_label = TRANSFER_AXES[name]
    panels = _ordered_variants(df["variant"])
    n = df[axis].nunique()
    return _loss_vs_lr_panels(
        df, panel="variant", panels=panels, panel_title=lambda p: PARAM_LABEL.get(p, p), line=axis,
        line_name=axis_label, out=out,
        suptitle=f"Learning-rate transfer across {axis_label} ({n} value{'s' * (n != 1)}): "
                 f"final validation loss vs η; ★ optimum of each {axis_label}")


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
    params = ", ".join(PARAM_LABEL.get(v, v) for v in _ordered_variants(df["variant"]))
    return _loss_vs_lr_panels(
        df, panel=rule, panels=panels, panel_title=lambda r: f"{params}: {EMB_RULE_LABEL.get(r, r)}",
        line="model.width", line_name="width", out=out,
        suptitle="Embedding LR rule: loss vs η across width (the better rule keeps the optimum put)")


# --------------------------------------------------------------------------------------------
# Hyperparameter transfer (independent search around the defaults, per width)
# --------------------------------------------------------------------------------------------

def hp_transfer(df: pd.DataFrame, out) -> pd.DataFrame:
    """Each non-LR HP: loss vs its value (log2), a line per width; a row per parametrization,
    a panel per HP. The base point (all defaults) joins every HP's line at the default value."""
    axis_col = "search.axis"
    axes_of = {}
    variants = _ordered_variants(df["variant"])
    for v in variants:
        g = df[df["variant"] == v]
        keys = [a for a in g[axis_col].dropna().astype(str).unique() if a not in ("base", "", "train.lr")]
        axes_of[v] = sorted(keys)
    ncols = max([len(k) for k in axes_of.values()] + [1])
    fig = new_figure(figsize=(3.0 * ncols + 0.4, 2.9 * max(len(variants), 1) + 0.4))
    grid = fig.subplots(max(len(variants), 1), ncols, squeeze=False)
    records = []
    for i, v in enumerate(variants):
        g = df[df["variant"] == v]
        base = g[g[axis_col].astype(str) == "base"]
        ylim = _loss_ylim(g["loss"])
        for j in range(ncols):
            ax = grid[i, j]
            if j >= len(axes_of[v]):
                ax.set_visible(False)
                continue
            key = axes_of[v][j]
            sub = pd.concat([g[g[axis_col].astype(str) == key], base])
            sub = sub[pd.to_numeric(sub[key], errors="coerce") > 0].copy()
            sub[key] = pd.to_numeric(sub[key])
            rows = _plot_loss_lines(ax, sub, x=key, line="model.width", line_name="width", x_is_lr=False)
            _finish_loss_panel(ax, rows, ylim, x=key)
            _log2_xaxis(ax, sub[key])
            if len(base) and key in base:
                default = pd.to_numeric(base[key], errors="coerce").dropna()
                if len(default):
                    ax.axvline(default.iloc[0], color="0.6", lw=0.8, ls=":", zorder=0)
            hp = key.split(".", 1)[-1]
            ax.set_title(f"{PARAM_LABEL.get(v, v)}: {HP_LABEL.get(hp, hp)}")
            ax.set_xlabel(f"{HP_LABEL.get(hp, hp)} (log₂ scale; dotted: default)")
            if j == 0:
                ax.set_ylabel("final validation loss")
            ax.legend(fontsize=6.5, loc="best", framealpha=0.85)
            records += _clean(rows, panel=v, hp=key)
    if not variants:
        _empty_panel(grid[0, 0], "no runs in the tables")
    fig.legend(handles=_MARK_LEGEND, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Hyperparameter transfer across width: loss vs each HP, the others at their defaults\n"
                 "(independent search); ★ optimum per width")
    save_figure(fig, out)
    return pd.DataFrame(records, columns=["panel", "hp", "line", "x_opt", "loss_opt", "runs", "diverged"])


# --------------------------------------------------------------------------------------------
# Search strategies: best loss so far vs number of runs
# --------------------------------------------------------------------------------------------

def search_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Per parametrization and strategy (`search.kind`, else the sweep name), the runs in
    `search.index` order and the best (non-diverged) loss after each."""
    df = df.copy()
    df["strategy"] = df["search.kind"].fillna(df["sweep"]) if "search.kind" in df else df["sweep"]
    df["strategy"] = df["strategy"].astype(str)
    order = "search.index" if "search.index" in df else "cell"
    rows = []
    for (v, s), g in df.groupby(["variant", "strategy"], sort=False):
        g = g.sort_values(order)
        best = g["loss"].cummin().ffill()  # a diverged run (NaN) keeps the best so far
        rows.append(pd.DataFrame({"variant": v, "strategy": s, "runs": np.arange(1, len(g) + 1),
                                  "loss": g["loss"].to_numpy(), "diverged": g["diverged"].to_numpy(),
                                  "best_so_far": best.to_numpy()}))
    cols = ["variant", "strategy", "runs", "loss", "diverged", "best_so_far"]
    return pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols)


def search_strategies(df: pd.DataFrame, out) -> pd.DataFrame:
    """Best validation loss so far vs number of runs: random vs independent search, a panel per
    parametrization; each run's own loss as a faint dot, diverged runs as × at the top."""
    curves = search_curves(df)
    variants = _ordered_variants(curves["variant"])
    strategies = sorted(curves["strategy"].unique(), key=lambda s: (s != "random", s))
    colors = {s: c for s, c in zip(strategies, ("C0", "C3", "C2", "C4", "C5"))}
    labels = {"random": "random search", "independent": "independent search (LR, then each HP)"}
    fig = new_figure(figsize=(3.8 * max(len(variants), 1) + 0.4, 3.4))
    axes = fig.subplots(1, max(len(variants), 1), squeeze=False, sharey=True)[0]
    # y-range: every best-so-far curve from its second run on (a bad first run enters from the top)
    tails = [g["best_so_far"].iloc[min(1, len(g) - 1):] for _, g in curves.groupby(["variant", "strategy"])]
    tail = pd.concat(tails).dropna() if tails else pd.Series(dtype=float)
    ylim = None
    if len(tail):
        lo, hi = tail.min(), tail.max()
        pad = 0.08 * max(hi - lo, 0.05)
        ylim = (lo - pad, hi + 3 * pad)
    for ax, v in zip(axes, variants):
        for s in strategies:
            c = curves[(curves["variant"] == v) & (curves["strategy"] == s)]
            if c.empty:
                continue
            final = c["best_so_far"].iloc[-1]
            ax.step(c["runs"], c["best_so_far"], where="post", color=colors[s], lw=1.8,
                    label=f"{labels.get(s, s)}: best {final:.3f} after {len(c)} runs")
            ax.scatter(c["runs"], c["loss"], s=14, color=colors[s], alpha=0.5, lw=0)
            if ylim is not None:
                above = c[c["loss"] > ylim[1]]["runs"].tolist()
                ax.set_ylim(*ylim)
                _mark_top(ax, above, [colors[s]] * len(above), "^", size=25)
            div = c[c["diverged"]]["runs"].tolist()
            _mark_top(ax, div, [colors[s]] * len(div), "x")
        ax.set_title(PARAM_LABEL.get(v, v))
        ax.set_xlabel("number of runs")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.legend(fontsize=7, loc="best", framealpha=0.85)
    if not variants:
        _empty_panel(axes[0], "no runs in the tables")
    axes[0].set_ylabel("best validation loss so far")
    handles = [Line2D([], [], marker="o", ls="", color="0.5", alpha=0.5, ms=4, label="one run's loss"),
               *_MARK_LEGEND[1:]]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Hyperparameter search: best loss vs number of runs, random vs independent search")
    save_figure(fig, out)
    return curves


# --------------------------------------------------------------------------------------------
# RMS figures
# --------------------------------------------------------------------------------------------

def _fp8_bands(ax, labels: bool = False) -> None:
    ax.axhspan(*E5M2_RANGE, color="tab:purple", alpha=0.07, lw=0, zorder=0,
               label="E5M2 normal range" if labels else None)
    ax.axhspan(*E4M3_RANGE, color="tab:green", alpha=0.10, lw=0, zorder=0,
               label="E4M3 normal range" if labels else None)


_BAND_LEGEND = [Patch(color="tab:green", alpha=0.25, label=r"E4M3 normal range $[2^{-6}, 448]$"),
                Patch(color="tab:purple", alpha=0.18, label=r"E5M2 normal range $[2^{-14}, 57344]$")]


def _type_legend(fig, colors: dict, styles: dict | None = None, extra: Sequence = ()) -> None:
    handles = [Line2D([], [], color=c, lw=1.6, ls=(styles or {}).get(t, "-"), label=t) for t, c in colors.items()]
    fig.legend(handles=[*handles, *extra], loc="outside right center", fontsize=7, frameon=False,
               title="tensor (median over blocks)", title_fontsize=7)


def rms_init(rms: pd.DataFrame, df: pd.DataFrame, out) -> pd.DataFrame:
    """Per-tensor RMS at step 0 vs width: a row per parametrization, a column per kind
    (weights, activations, gradients), E4M3/E5M2 normal ranges shaded, log2 y-axis."""
    long = rms_long(rms, df)
    long = long[long["step"] == long.groupby("cell")["step"].transform("min")]
    data = _median_over_blocks(long, ["variant", "model.width"])
    variants = _ordered_variants(data["variant"])
    kinds = [k for k in RMS_KINDS if k in set(data["kind"])] or list(RMS_KINDS)
    colors = _type_colors(data["type"])
    fig = new_figure(figsize=(3.3 * len(kinds) + 1.8, 2.9 * max(len(variants), 1) + 0.3))
    grid = fig.subplots(max(len(variants), 1), len(kinds), squeeze=False, sharey=True, sharex=True)
    lo = min(data["rms"].min() / 2, E5M2_RANGE[0] / 4) if len(data) else E5M2_RANGE[0] / 4
    hi = max(data["rms"].max() * 2, E5M2_RANGE[1] * 4) if len(data) else E5M2_RANGE[1] * 4
    for i, v in enumerate(variants):
        for j, kind in enumerate(kinds):
            ax = grid[i, j]
            _fp8_bands(ax)
            g = data[(data["variant"] == v) & (data["kind"] == kind)]
            for t, tg in g.groupby("type"):
                tg = tg.sort_values("model.width")
                ax.plot(tg["model.width"], tg["rms"], marker="o", ms=3, lw=1.2, color=colors[t])
            _log2_xaxis(ax, data["model.width"], integer_ticks=True)
            _log2_yaxis(ax)
            ax.set_ylim(lo, hi)
            ax.set_title(f"{PARAM_LABEL.get(v, v)}: {RMS_KIND_LABEL[kind]}")
            if i == len(variants) - 1:
                ax.set_xlabel("width (log₂ scale)")
            if j == 0:
                ax.set_ylabel("RMS at initialisation (log₂)")
    if not variants:
        _empty_panel(grid[0, 0], "no RMS rows in the tables")
    _type_legend(fig, colors, extra=_BAND_LEGEND)
    fig.suptitle("Per-tensor RMS at initialisation across width, with the FP8 formats' normal ranges")
    save_figure(fig, out)
    return data.rename(columns={"model.width": "width"})


def _pick_cell(g: pd.DataFrame) -> pd.Series | None:
    """The cell a per-configuration figure shows: the best non-diverged loss, else any."""
    if g.empty:
        return None
    ok = g[g["loss"].notna()]
    return ok.loc[ok["loss"].idxmin()] if len(ok) else g.iloc[0]


def rms_training(rms: pd.DataFrame, df: pd.DataFrame, out) -> pd.DataFrame:
    """RMS over training steps of the FFN (solid) and decoder (dashed) tensors, at the largest
    width in the sweep (its best-loss LR): a row per parametrization, a column per kind."""
    long = rms_long(rms, df)
    width = long["model.width"].max() if len(long) else None
    variants = _ordered_variants(long["variant"])
    picked = {}
    for v in variants:
        cell = _pick_cell(df[(df["variant"] == v) & (df["model.width"] == width)])
        if cell is not None:
            picked[v] = cell
    sel = long[long["cell"].isin([c["cell"] for c in picked.values()]) & (long["group"] != "attention")]
    data = _median_over_blocks(sel, ["variant", "cell", "step"])
    kinds = [k for k in RMS_KINDS if k in set(data["kind"])] or list(RMS_KINDS)
    colors = _type_colors(data["type"])
    styles = {t: ("-" if tensor_group(t) == "FFN" else "--") for t in colors}
    fig = new_figure(figsize=(3.4 * len(kinds) + 1.8, 2.8 * max(len(picked), 1) + 0.3))
    grid = fig.subplots(max(len(picked), 1), len(kinds), squeeze=False, sharex=True)
    for i, (v, cell) in enumerate(picked.items()):
        for j, kind in enumerate(kinds):
            ax = grid[i, j]
            g = data[(data["variant"] == v) & (data["kind"] == kind)]
            for t, tg in g.groupby("type"):
                tg = tg.sort_values("step")
                ax.plot(tg["step"], tg["rms"], lw=1.3, ls=styles[t], color=colors[t],
                        marker="." if len(tg) < 8 else None)
            if len(g):
                ylo, yhi = g["rms"].min() / 2, g["rms"].max() * 2
                _fp8_bands(ax)
                _log2_yaxis(ax)
                ax.set_ylim(ylo, yhi)
            div = " (diverged)" if bool(cell["diverged"]) else ""
            ax.set_title(f"{PARAM_LABEL.get(v, v)}, η={_fmt_pow2(cell['train.lr'])}{div}: {RMS_KIND_LABEL[kind]}",
                         fontsize=9)
            if i == len(picked) - 1:
                ax.set_xlabel("training step")
            if j == 0:
                ax.set_ylabel("RMS (log₂)")
    if not picked:
        _empty_panel(grid[0, 0], "no RMS rows in the tables")
    style_legend = [Line2D([], [], color="0.3", ls="-", label="FFN tensor"),
                    Line2D([], [], color="0.3", ls="--", label="decoder tensor")]
    _type_legend(fig, colors, styles, extra=[*style_legend, *_BAND_LEGEND])
    fig.suptitle(f"RMS during training, FFN and decoder tensors (width {_fmt_value(width) if width else '?'}; "
                 "shaded: FP8 normal ranges where in view)")
    save_figure(fig, out)
    return data


def rms_end(rms: pd.DataFrame, df: pd.DataFrame, out, parametrization: str = "umup") -> pd.DataFrame:
    """End-of-training RMS per tensor type vs LR, width, depth, steps and batch size (paper
    Fig. 14): u-μP cells pooled over the sweeps; along each axis the other axes sit at the base
    point (the most common value of each) and, off the LR axis, the LR nearest the default."""
    from umup_repro.config import DEFAULT_LR

    variants = _ordered_variants(df["variant"])
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
        pts = _median_over_blocks(long[long["cell"].isin(sel["cell"])], [col, "step"])
        pts = pts.rename(columns={col: "value"})
        pts["axis"] = col
        frames.append(pts)
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["axis", "value", "kind", "type", "group", "rms"])
    kinds = [k for k in RMS_KINDS if k in set(data["kind"])] or list(RMS_KINDS)
    colors = _type_colors(data["type"])
    ncols = max(len(axes), 1)
    fig = new_figure(figsize=(2.9 * ncols + 1.8, 2.6 * len(kinds) + 0.3))
    grid = fig.subplots(len(kinds), ncols, squeeze=False, sharey="row")
    for j, (col, label) in enumerate(axes):
        diverged = cells[cells["diverged"]]
        for i, kind in enumerate(kinds):
            ax = grid[i, j]
            g = data[(data["axis"] == col) & (data["kind"] == kind)]
            for t, tg in g.groupby("type"):
                tg = tg.sort_values("value")
                ax.plot(tg["value"], tg["rms"], marker="o", ms=2.5, lw=1.1, color=colors[t])
            _log2_xaxis(ax, cells[col], integer_ticks=(col != "train.lr"))
            _log2_yaxis(ax)
            if col == "train.lr":
                ax.axvline(base[col], color="0.6", lw=0.8, ls=":", zorder=0)
            dx = diverged[col].tolist() if col == "train.lr" else []
            _mark_top(ax, dx, ["0.2"] * len(dx), "x")
            if i == 0:
                fixed = ", ".join(f"{_SHORT[c]}={_fmt_pow2(base[c]) if c == 'train.lr' else _fmt_value(base[c])}"
                                  for c, _ in RMS_END_AXES if c in base and c != col)
                ax.set_title(f"vs {label}\n({fixed})", fontsize=8)
            if i == len(kinds) - 1:
                ax.set_xlabel(f"{label} (log₂ scale)")
            if j == 0:
                ax.set_ylabel(f"final RMS, {RMS_KIND_LABEL[kind]}")
    if not axes:
        _empty_panel(grid[0, 0], "no swept axis in the tables")
    _type_legend(fig, colors, extra=[Line2D([], [], marker="x", ls="", color="0.2", label="diverged run")])
    if len(data) and "train.steps" in long:
        last = long.groupby("cell").agg(step=("step", "max"), steps=("train.steps", "first"))
        early = last[last["step"] < 0.75 * last["steps"]]
        if len(early):
            fig.text(0.01, -0.01, f"note: {len(early)} of {len(last)} cells logged their last RMS before their last "
                     f"step (e.g. step {int(early['step'].iloc[0])} of {int(early['steps'].iloc[0])}); "
                     "their points show the RMS there", fontsize=7, color="0.35", ha="left", va="top")
    fig.suptitle(f"{PARAM_LABEL.get(param, param)}: per-tensor RMS at the end of training vs each swept "
                 "hyperparameter (others at the base point)")
    save_figure(fig, out)
    return data


# --------------------------------------------------------------------------------------------
# FP8 training curves
# --------------------------------------------------------------------------------------------

def fp8_training(metrics: pd.DataFrame, df: pd.DataFrame, out) -> pd.DataFrame:
    """Training loss over steps (smoothed; validation points as dots) of u-μP vs u-μP-FP8 vs
    μP vs μP-FP8, a panel per width; per variant the best-loss LR when several were run."""
    widths = sorted(df["model.width"].dropna().unique())
    variants = _ordered_variants(df["variant"])
    m = metrics.copy()
    for c in ("step", "train_loss", "val_loss"):
        m[c] = pd.to_numeric(m[c], errors="coerce")
    fig = new_figure(figsize=(4.2 * max(len(widths), 1) + 0.4, 3.5))
    axes = fig.subplots(1, max(len(widths), 1), squeeze=False, sharey=True)[0]
    records, all_losses = [], []
    for ax, w in zip(axes, widths):
        for v in variants:
            cell = _pick_cell(df[(df["variant"] == v) & (df["model.width"] == w)])
            if cell is None:
                continue
            c = m[m["cell"] == cell["cell"]].sort_values("step")
            train = c[np.isfinite(c["train_loss"])]
            span = max(1, len(train) // 20)
            smooth = train["train_loss"].rolling(span, min_periods=1).mean()
            color = PARAM_COLOR.get(v, None)
            diverged = bool(cell["diverged"])
            label = f"{PARAM_LABEL.get(v, v)} (η={_fmt_pow2(cell['train.lr'])})" + (
                ": diverged" if diverged else f": final val {cell['loss']:.3f}")
            ax.plot(train["step"], smooth, color=color, lw=1.4, label=label)
            val = c[np.isfinite(c["val_loss"])]
            ax.scatter(val["step"], val["val_loss"], color=color, s=12, zorder=5, edgecolors="white", linewidths=0.4)
            all_losses += val["val_loss"].tolist() + smooth.tolist()
            if diverged and len(train):
                ax.scatter([train["step"].iloc[-1]], [smooth.iloc[-1]], marker="x", s=50, color=color, zorder=6)
            records.append({"width": w, "variant": v, "cell": cell["cell"], "lr": cell["train.lr"],
                            "diverged": diverged, "final_val_loss": cell["loss"],
                            "last_val_loss": float(val["val_loss"].iloc[-1]) if len(val) else np.nan,
                            "steps": int(c["step"].max()) if len(c) else 0})
        ax.set_title(f"width {_fmt_value(w)}")
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.legend(fontsize=7, loc="upper right", framealpha=0.85)
    if not widths:
        _empty_panel(axes[0], "no runs in the tables")
    finite = [x for x in all_losses if np.isfinite(x)]
    if finite:
        first = max(finite)
        lo = min(finite)
        axes[0].set_ylim(lo - 0.05 * (first - lo + 0.1), min(first, lo + 4 * (np.median(finite) - lo) + 0.5) + 0.05)
    axes[0].set_ylabel("training loss (smoothed); dots: validation")
    fig.suptitle("FP8 training: u-μP with plain FP8 casts vs u-μP, and μP with the same casts")
    save_figure(fig, out)
    return pd.DataFrame(records, columns=["width", "variant", "cell", "lr", "diverged", "final_val_loss",
                                          "last_val_loss", "steps"])


# --------------------------------------------------------------------------------------------
# Coordinate check (tables written by `umup-repro coord-check`)
# --------------------------------------------------------------------------------------------

def load_coord_check(tables: str | os.PathLike, parametrizations: Sequence[str] = ()) -> pd.DataFrame:
    """`<tables>/coord_check/<p>/coord_check.csv` of each parametrization (all found if none given)."""
    root = Path(tables) / "coord_check"
    names = list(parametrizations) or sorted(p.name for p in root.glob("*") if (p / "coord_check.csv").exists())
    frames = []
    for p in names:
        path = root / p / "coord_check.csv"
        if not path.exists():
            raise FileNotFoundError(f"figures: {path} is missing; run `umup-repro coord-check "
                                    f"--parametrization {p} --out {root / p}`")
        frames.append(pd.read_csv(path))
    if not frames:
        raise FileNotFoundError(f"figures: no coord_check tables under {root}")
    return pd.concat(frames, ignore_index=True)


def coord_check(table: pd.DataFrame, out) -> pd.DataFrame:
    """TP-V coordinate check: activation RMS vs width after 0…S Adam steps, a row per
    parametrization, a column per step; returns the log-log slope per tensor and step."""
    from umup_repro.analyses.coord_check import width_slopes

    acts = table[table["kind"] == "activation"].copy()
    acts["type"] = acts["tensor"].map(tensor_type)
    params = _ordered_variants(acts["parametrization"])
    steps = sorted(acts["step"].unique())
    colors = _type_colors(acts["type"])
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
            _log2_xaxis(ax, acts["width"], integer_ticks=True)
            _log2_yaxis(ax)
            logit = s[(s["step"] == step) & (s["tensor"] == "readout")]["slope"]
            extra = f"; logits slope {logit.iloc[0]:+.2f}" if len(logit) else ""
            ax.set_title(f"{PARAM_LABEL.get(p, p)}, step {step}{extra}", fontsize=8)
            if i == len(params) - 1:
                ax.set_xlabel("width (log₂ scale)")
            if j == 0:
                ax.set_ylabel("activation RMS (log₂)")
    _type_legend(fig, colors)
    fig.legends[-1].set_title("tensor (every block)")
    fig.suptitle("Coordinate check: activation RMS vs width after each Adam step "
                 "(flat in width under μP and u-μP; SP grows)")
    save_figure(fig, out)
    return pd.concat(slopes, ignore_index=True) if slopes else pd.DataFrame()


# --------------------------------------------------------------------------------------------
# Registry and entry point
# --------------------------------------------------------------------------------------------

# figure name → (default sweeps, which tables it reads besides the main ones)
FIGURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "transfer_width": (("lr_width",), ()),
    "transfer_depth": (("lr_depth",), ()),
    "transfer_batch": (("lr_batch",), ()),
    "transfer_steps": (("lr_steps",), ()),
    "hp_transfer": (("hp_width",), ()),
    "search_strategies": (("search_random", "search_independent"), ()),
    "embedding_lr": (("embedding_lr",), ()),
    "rms_init": (("rms",), ("rms",)),
    "rms_training": (("rms",), ("rms",)),
    "rms_end": (("lr_width", "lr_depth", "lr_steps", "lr_batch"), ("rms",)),
    "fp8_training": (("fp8",), ("metrics",)),
    "coord_check": ((), ()),
}


def tables_needed(name: str, sweeps: Sequence[str]) -> list[str]:
    """Paths (relative to the tables folder) a figure reads: what its Snakemake rule depends on."""
    if name == "coord_check":
        return [f"coord_check/{p}/coord_check.csv" for p in sweeps]
    extra = FIGURES[name][1]
    return [f"{s}.csv" for s in sweeps] + [f"{k}/{s}.csv" for k in extra for s in sweeps]


def plot(name: str, tables: str | os.PathLike = "results/tables", sweeps: Sequence[str] | None = None,
         out: str | os.PathLike | None = None) -> pd.DataFrame:
    """Draw figure `name` from the tables of `sweeps` (default: the figure's usual sweeps) into
    `out` (default figures/<name>.pdf) and its PNG; returns what it plotted."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; one of {', '.join(FIGURES)}")
    sweeps = list(sweeps) if sweeps else list(FIGURES[name][0])
    out = Path(out) if out is not None else Path("figures") / f"{name}.pdf"
    out.parent.mkdir(parents=True, exist_ok=True)
    if name == "coord_check":
        return coord_check(load_coord_check(tables, sweeps), out)
    df = load_table(tables, sweeps)
    if name in TRANSFER_AXES:
        return transfer(name, df, out)
    if name in ("rms_init", "rms_training", "rms_end"):
        return globals()[name](load_table(tables, sweeps, "rms"), df, out)
    if name == "fp8_training":
        return fp8_training(load_table(tables, sweeps, "metrics"), df, out)
    return globals()[name](df, out)


def main(args) -> int:
    sweeps = [s for item in (args.sweeps or []) for s in str(item).split(",") if s]
    try:
        result = plot(args.name, args.tables, sweeps or None, args.out)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"umup-repro plot {args.name}: {err}") from None
    out = Path(args.out) if args.out else Path("figures") / f"{args.name}.pdf"
    if args.data:
        from umup_repro.analyses._common import write_table

        write_table(result, args.data)
    with pd.option_context("display.width", 160, "display.max_rows", 60, "display.max_columns", 12):
        shown = result.drop(columns=[c for c in result.columns if c in ("cell",)], errors="ignore")
        print(shown.to_string(index=False) if len(shown) else "(nothing plotted)")
    print(f"wrote {out} and {out.with_suffix('.png')}" + (f", {args.data}" if args.data else ""))
    return 0


__all__ = [
    "FIGURES",
    "coord_check",
    "embedding_lr",
    "fp8_training",
    "hp_transfer",
    "load_table",
    "main",
    "plot",
    "prepare",
    "rms_end",
    "rms_init",
    "rms_training",
    "search_curves",
    "search_strategies",
    "tables_needed",
    "tensor_type",
    "transfer",
    "transfer_batch",
    "transfer_depth",
    "transfer_steps",
    "transfer_width",
]
