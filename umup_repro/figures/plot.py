"""`plot(name, ...)`: what `umup-repro plot NAME` and the Snakemake figure rules
(workflow/rules/figures.smk) call. Which figures there are, the tables each reads and the function
that draws it come from the catalog (umup_repro/core/figure_catalog.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from importlib import import_module
from pathlib import Path

import pandas as pd

from umup_repro.core.figure_catalog import FIGURES, TABLE_PATHS
from umup_repro.results.tables import load_coord_check, load_table


def drawing_function(name: str) -> Callable:
    """The function the catalog names for figure `name` ("module:function"), imported."""
    module, _, function = FIGURES[name].draw.partition(":")
    return getattr(import_module(module), function)


def _load(kind: str, tables: str | os.PathLike, sweeps: Sequence[str]) -> pd.DataFrame:
    if kind == "coord_check":
        return load_coord_check(tables, sweeps)
    if kind == "transfer_error":
        path = Path(tables) / TABLE_PATHS[kind]
        if not path.exists():
            raise FileNotFoundError(f"figures: {path} is missing; run `umup-repro transfer-error`")
        return pd.read_csv(path)
    return load_table(tables, sweeps, kind)


def plot(
    name: str,
    tables: str | os.PathLike = "results/tables",
    sweeps: Sequence[str] | None = None,
    out: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Draw figure `name` from the tables of `sweeps` (default: the figure's usual sweeps) into
    `out` (default figures/<name>.pdf) and its PNG; returns what it plotted."""
    if name not in FIGURES or FIGURES[name].command != "plot":  # read now: an entry added after import too
        plotted = [f.name for f in FIGURES.values() if f.command == "plot"]
        raise ValueError(f"unknown figure {name!r}; one of {', '.join(plotted)}")
    sweeps = list(sweeps) if sweeps else list(FIGURES[name].sweeps)
    out = Path(out) if out is not None else Path("figures") / f"{name}.pdf"
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = [_load(kind, tables, sweeps) for kind in FIGURES[name].tables]
    return drawing_function(name)(*frames, out)


def main(args) -> int:
    """`umup-repro plot NAME`: draw it, print what it plotted, write that table with --data."""
    sweeps = [s for item in (args.sweeps or []) for s in str(item).split(",") if s]
    for option, path in (("--out", args.out), ("--data", args.data)):
        if path and Path(path).is_dir():
            raise SystemExit(
                f"umup-repro plot {args.name}: {option} {path} is a folder; give a file path"
                f" (e.g. {Path(path) / (args.name + ('.pdf' if option == '--out' else '.csv'))})"
            )
    try:
        result = plot(args.name, args.tables, sweeps or None, args.out)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"umup-repro plot {args.name}: {err}") from None
    except KeyError as err:  # a table without a column the figure reads: damaged or another version's
        raise SystemExit(
            f"umup-repro plot {args.name}: a table under {args.tables} has no column {err}; aggregate"
            " its sweep again (umup-repro aggregate)"
        ) from None
    out = Path(args.out) if args.out else Path("figures") / f"{args.name}.pdf"
    if args.data:
        from umup_repro.core.atomic import write_table

        write_table(result, args.data)
    with pd.option_context("display.width", 160, "display.max_rows", 60, "display.max_columns", 12):
        shown = result.drop(columns=[c for c in result.columns if c in ("cell",)], errors="ignore")
        print(shown.to_string(index=False) if len(shown) else "(nothing plotted)")
    print(f"wrote {out} and {out.with_suffix('.png')}" + (f", {args.data}" if args.data else ""))
    return 0


__all__ = ["drawing_function", "main", "plot"]
