"""Shared helpers of the notes' analyses: plot style, atomic outputs, log-log slopes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from umup_repro.atomic import atomic_path


def set_style() -> None:
    """One look for every analysis figure (seaborn's paper context on a white grid)."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.0)


def new_figure(**kwargs) -> Figure:
    """A figure that needs no pyplot (hence no GUI backend): safe in jobs and threads."""
    set_style()
    return Figure(constrained_layout=True, **kwargs)


def _atomic(path: str | os.PathLike, write) -> Path:
    """Call write(tmp_path) on a temp file next to `path`, then rename it onto `path`."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write `df` as CSV atomically (a killed job leaves the old file or none, never half)."""
    return _atomic(path, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g"))


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> tuple[Path, Path]:
    """Save `fig` as `path` (PDF) and the PNG next to it, both atomically."""
    path = Path(path)
    png = path.with_suffix(".png")
    # tight bounding box: legends placed outside the axes (seaborn's) are kept, not clipped
    _atomic(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "pdf", bbox_inches="tight"))
    _atomic(png, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
    return path, png


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x (the exponent p in y ∝ x^p)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = (x > 0) & (y > 0) & np.isfinite(y)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def slope_label(slope: float) -> str:
    """'∝ n^0.98' style text for legends and annotations."""
    return f"{slope:+.2f}"


def sibling(path: str | os.PathLike, suffix: str) -> Path:
    """results/tables/x.csv + '_slopes' -> results/tables/x_slopes.csv (default extra outputs)."""
    path = Path(path)
    return path.with_name(f"{path.stem}{suffix}{path.suffix}")


def reject_options(args, names: tuple[str, ...], analysis: str) -> None:
    """Refuse CLI options that belong to another analysis instead of silently ignoring them."""
    for name in names:
        if getattr(args, name, None) is not None:
            raise SystemExit(f"umup-repro analysis {analysis}: --{name.replace('_', '-')} "
                             "does not apply to this analysis")
