"""Shared helpers of the notes' analyses: slope labels, output names, option checks; figures are
saved by `umup_repro.figures.style`, tables by `umup_repro.core.atomic.write_table`."""

from __future__ import annotations

import os
from pathlib import Path


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
            raise SystemExit(
                f"umup-repro analysis {analysis}: --{name.replace('_', '-')} does not apply to this analysis"
            )
