"""`umup-repro claims`: write the replication scorecard (umup_repro/results/claims.py) as a table
(`results/tables/claims.csv`), a figure read at a glance (`figures/claims.pdf`/`.png`: one row
per claim, the verdict coloured) and a markdown page (`figures/claims.md`)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pandas as pd

from umup_repro.core.atomic import write_text
from umup_repro.results.claims import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, scorecard

VERDICT_COLOR = {HOLDS: "#b7e1b0", FAILS: "#f4b6b0", INCONCLUSIVE: "#f6e3a1"}  # not measured: grey
_NOT_MEASURED_COLOR = "#dddddd"
# (column, header, wrap width in characters, relative column width)
_FIGURE_COLUMNS = (
    ("claim", "claim", 34, 3.2),
    ("paper_value", "paper", 30, 2.8),
    ("measured", "measured here", 38, 3.6),
    ("threshold", "threshold", 34, 3.2),
    ("verdict", "verdict", 12, 1.0),
)


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(str(text), width)) or "–"


def draw(card: pd.DataFrame, out: str | os.PathLike) -> None:
    """A table figure: a row per claim, the verdict cell green (holds), red (fails), yellow
    (inconclusive) or grey (not measured)."""
    from umup_repro.figures.style import new_figure, save_figure

    cells = [[_wrap(row[c], w) for c, _, w, _ in _FIGURE_COLUMNS] for _, row in card.iterrows()]
    lines = [max(cell.count("\n") + 1 for cell in row) for row in cells]
    rows_height = sum(lines) + 1.2 * len(lines) + 2.2  # text lines + padding, header included
    height = 0.5 + 0.17 * rows_height
    fig = new_figure(figsize=(15, height))
    fig.set_layout_engine("none")
    ax = fig.add_axes([0, 0, 1, 1])
    ax.axis("off")
    total = sum(r for *_, r in _FIGURE_COLUMNS)
    table = ax.table(
        cellText=cells or [["–"] * len(_FIGURE_COLUMNS)],
        colLabels=[h for _, h, _, _ in _FIGURE_COLUMNS],
        colWidths=[r / total for *_, r in _FIGURE_COLUMNS],
        loc="upper center",
        cellLoc="left",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(7.5)
    unit = 1.0 / rows_height
    for (i, j), cell in table.get_celld().items():
        n = 1 if i == 0 else lines[i - 1] if i - 1 < len(lines) else 1
        cell.set_height(unit * (n + 1.2))
        cell.set_edgecolor("0.75")
        if i == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("0.92")
        elif _FIGURE_COLUMNS[j][0] == "verdict" and i - 1 < len(card):
            cell.set_facecolor(VERDICT_COLOR.get(card["verdict"].iloc[i - 1], _NOT_MEASURED_COLOR))
    counts = card["verdict"].value_counts()
    fig.suptitle(
        f"Replication scorecard: {counts.get(HOLDS, 0)} hold, {counts.get(FAILS, 0)} fail, "
        f"{counts.get(INCONCLUSIVE, 0)} inconclusive, {counts.get(NOT_MEASURED, 0)} not measured",
        y=1.0 + 0.3 / height,
    )
    save_figure(fig, out)


def markdown(card: pd.DataFrame) -> str:
    """The scorecard as a markdown table (`|` in a value escaped)."""
    cols = list(card.columns)
    esc = [[str(v).replace("|", "\\|") for v in row] for row in card.itertuples(index=False)]
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in esc]
    return (
        "# Replication scorecard\n\nWritten by `umup-repro claims` from `results/tables/`.\n\n"
        + "\n".join(lines)
        + "\n"
    )


def main(args) -> int:
    """`umup-repro claims`: the scorecard from the tables (only `--inputs` when given)."""
    from umup_repro.core.atomic import write_table

    only = args.inputs if args.inputs is not None else None
    missing = [p for p in only or [] if not Path(p).is_file()]
    if missing:
        from umup_repro.core.errors import UserError

        raise UserError(f"--inputs: {missing[0]} does not exist (aggregate the sweeps first, or leave --inputs out)")
    card = scorecard(args.tables, only)
    write_table(card, args.out)
    if args.figure:
        draw(card, args.figure)
    if args.page:
        write_text(args.page, markdown(card))
    with pd.option_context("display.width", 200, "display.max_colwidth", 70):
        print(card[["claim", "measured", "verdict"]].to_string(index=False))
    print(f"wrote {args.out}" + "".join(f", {p}" for p in (args.figure, args.page) if p))
    return 0


__all__ = ["draw", "main", "markdown"]
