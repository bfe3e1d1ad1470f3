"""Which figures there are, which tables each reads, and `plot(name, ...)`: what
`umup-repro plot NAME` and the Snakemake figure rules (workflow/rules/figures.smk) call."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from umup_repro.figures.coord_check_plot import coord_check
from umup_repro.figures.fp8 import fp8_training
from umup_repro.figures.hyperparameters import hp_transfer
from umup_repro.figures.large_scale import large_scale
from umup_repro.figures.lr_transfer import TRANSFER_AXES, embedding_lr, transfer
from umup_repro.figures.rms import rms_end, rms_init, rms_training
from umup_repro.figures.search import search_strategies, transfer_error
from umup_repro.figures.stability_fixes import stability_fixes
from umup_repro.figures.tables import load_coord_check, load_table

# figure name → (default sweeps, which tables it reads besides the main ones)
FIGURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "transfer_width": (("lr_width",), ()),
    "transfer_depth": (("lr_depth",), ()),
    "transfer_batch": (("lr_batch",), ()),
    "transfer_steps": (("lr_steps",), ()),
    "hp_transfer": (("hp_width",), ()),
    "search_strategies": (("search_random", "search_staged"), ()),
    "transfer_error": (("hp_pairs",), ()),  # reads transfer_error.csv (umup-repro transfer-error)
    "embedding_lr": (("embedding_lr",), ()),
    "stability_fixes": (("lr_stability",), ()),
    "rms_init": (("rms",), ("rms",)),
    "rms_training": (("rms",), ("rms",)),
    "rms_end": (("lr_width", "lr_depth", "lr_steps", "lr_batch"), ("rms",)),
    "fp8_training": (("fp8",), ("metrics",)),
    "large_scale": (("large_scale",), ("metrics",)),
    "coord_check": ((), ()),
}

# How each figure that reads only the main table is drawn: draw(main table, out).
_FROM_MAIN = {"hp_transfer": hp_transfer, "search_strategies": search_strategies, "embedding_lr": embedding_lr,
             "stability_fixes": stability_fixes}
# Figures that read a long table too: draw(that table, main table, out).
_FROM_LONG = {"rms_init": ("rms", rms_init), "rms_training": ("rms", rms_training), "rms_end": ("rms", rms_end),
              "fp8_training": ("metrics", fp8_training), "large_scale": ("metrics", large_scale)}


def tables_needed(name: str, sweeps: Sequence[str]) -> list[str]:
    """Paths (relative to the tables folder) a figure reads: what its Snakemake rule depends on."""
    if name == "coord_check":
        return [f"coord_check/{p}/coord_check.csv" for p in sweeps]
    if name == "transfer_error":
        return ["transfer_error.csv"] + [f"{s}.csv" for s in sweeps]
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
    if name == "transfer_error":
        path = Path(tables) / "transfer_error.csv"
        if not path.exists():
            raise FileNotFoundError(f"figures: {path} is missing; run `umup-repro transfer-error`")
        return transfer_error(pd.read_csv(path), out)
    df = load_table(tables, sweeps)
    if name in TRANSFER_AXES:
        return transfer(name, df, out)
    if name in _FROM_LONG:
        kind, draw = _FROM_LONG[name]
        return draw(load_table(tables, sweeps, kind), df, out)
    return _FROM_MAIN[name](df, out)


def main(args) -> int:
    """`umup-repro plot NAME`: draw it, print what it plotted, write that table with --data."""
    sweeps = [s for item in (args.sweeps or []) for s in str(item).split(",") if s]
    for option, path in (("--out", args.out), ("--data", args.data)):
        if path and Path(path).is_dir():
            raise SystemExit(f"umup-repro plot {args.name}: {option} {path} is a folder; give a file path"
                             f" (e.g. {Path(path) / (args.name + ('.pdf' if option == '--out' else '.csv'))})")
    try:
        result = plot(args.name, args.tables, sweeps or None, args.out)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"umup-repro plot {args.name}: {err}") from None
    except KeyError as err:  # a table without a column the figure reads: damaged or another version's
        raise SystemExit(f"umup-repro plot {args.name}: a table under {args.tables} has no column {err}; aggregate"
                         " its sweep again (umup-repro aggregate)") from None
    out = Path(args.out) if args.out else Path("figures") / f"{args.name}.pdf"
    if args.data:
        from umup_repro.analyses._common import write_table

        write_table(result, args.data)
    with pd.option_context("display.width", 160, "display.max_rows", 60, "display.max_columns", 12):
        shown = result.drop(columns=[c for c in result.columns if c in ("cell",)], errors="ignore")
        print(shown.to_string(index=False) if len(shown) else "(nothing plotted)")
    print(f"wrote {out} and {out.with_suffix('.png')}" + (f", {args.data}" if args.data else ""))
    return 0


__all__ = ["FIGURES", "main", "plot", "tables_needed"]
