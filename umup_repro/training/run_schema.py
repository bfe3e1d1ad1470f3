"""What a run folder's summary.json and rows must hold, by type and finiteness (umup_repro/training/run_format.py).

A summary is a pydantic model: its numbers are numbers (never `"abc"`, `true` or a numeric
string), losses finite or null, counts non-negative integers; the flattened config and provenance
it also carries pass through unchecked. Rows are checked a whole table at a time (one pandas
parse: aggregating thousands of runs stays fast; pandas is imported only then): step and tokens
non-negative integers, lr and rms numbers, losses numbers or empty; in a run not marked diverged
every number finite.
`RowsError` names the file, line and field.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Count = Annotated[int, Field(strict=True, ge=0)]
NonNegative = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)]


class Summary(BaseModel):
    """The fields of summary.json that tables, searches and estimates compute with."""

    model_config = ConfigDict(extra="allow")

    cell: str
    config_hash: str
    steps_done: Count
    diverged: Annotated[bool, Field(strict=True)]
    final_train_loss: FiniteFloat | None = None
    final_val_loss: FiniteFloat | None = None
    final_val_step: Count | None = None
    tokens: Count | None = None
    parameters: Count | None = None
    attempts: Count | None = None
    wall_seconds: NonNegative | None = None
    train_seconds: NonNegative | None = None
    tokens_per_second: NonNegative | None = None
    flops_per_token: NonNegative | None = None
    mfu: FiniteFloat | None = None


def summary_problem(summary: Mapping[str, Any]) -> str | None:
    """The first field of `summary` that the model refuses, as "field: why (got value)"; None if valid."""
    try:
        Summary.model_validate(summary)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        return f"{field}: {first['msg'].lower()} (got {first.get('input')!r})"
    return None


# Per table: the integer columns, the number columns that must be present, those that may be empty.
ROWS = {
    "metrics.csv": (("step", "tokens"), ("lr",), ("train_loss", "val_loss")),
    "rms.csv": (("step",), ("rms",), ()),
}
# In a diverged run these may be NaN or infinite (the rows up to the divergence are kept).
MAY_DIVERGE = {"train_loss", "val_loss", "rms"}


class RowsError(ValueError):
    """A row of metrics.csv or rms.csv that is not what a run writes."""


def check_rows(
    text: str, name: str, *, diverged: Callable[[str | None], bool], file_of: Callable[[str | None], Path]
) -> None:
    """Check the rows of `name` (metrics.csv or rms.csv) in `text`: one run's file, or a long table
    whose first column is `cell`. `diverged(cell)` and `file_of(cell)` (cell None for one file)
    say whether that run diverged and which file to name. RowsError names file, line, field."""
    import numpy as np
    import pandas as pd

    integers, numbers, optional = ROWS[name]
    # "nan" and "" both read as NaN: where a "nan" appears at all, read everything as text to tell them apart
    # (fast scans: "N" first, as the capitalised spellings are rare, and a 470 MB table takes a second a scan)
    suspicious = "nan" in text or ("N" in text and any(spelling in text for spelling in ("NaN", "NAN", "Nan")))
    header = text.split("\n", 1)[0].split(",")
    used = [c for c in header if c in integers + numbers + optional]  # (no text columns: fast)
    data = text.encode("utf-8")  # pandas parses bytes fastest; io.StringIO of a 470 MB table alone took 4 s
    frame = pd.read_csv(
        io.BytesIO(data),
        usecols=used,
        dtype=str if suspicious else None,
        keep_default_na=not suspicious,
        na_values=[""] if suspicious else None,
    )
    if frame.empty:
        return
    found: list = []

    def cells():  # each row's cell (None for one run's file), read only when needed
        if not found:
            found.append(
                pd.read_csv(io.BytesIO(data), usecols=["cell"], dtype=str)["cell"]
                if "cell" in header
                else pd.Series([None] * len(frame), index=frame.index, dtype=object)
            )
        return found[0]

    run_diverged = None
    for column in integers + numbers + optional:
        raw = frame[column]
        empty = raw.isna()
        if pd.api.types.is_numeric_dtype(raw):
            values, not_number = raw.astype(float), pd.Series(False, index=raw.index)
        else:
            values = pd.to_numeric(raw, errors="coerce").astype(float)
            nan_text = raw.fillna("").astype(str).str.strip().str.lower().isin(["nan", "-nan", "+nan"])
            not_number = ~empty & values.isna() & ~nan_text
        finite = pd.Series(np.isfinite(values.to_numpy()), index=raw.index)
        non_finite = ~empty & ~not_number & ~finite
        if column in MAY_DIVERGE and non_finite.any():
            run_diverged = run_diverged if run_diverged is not None else cells().map(diverged).astype(bool)
            non_finite &= ~run_diverged
        missing = empty if column not in optional else pd.Series(False, index=raw.index)
        not_count = (finite & ((values < 0) | (values != values.round()))) if column in integers else missing & False
        bad = not_number | missing | non_finite | not_count
        if bad.any():
            i, cell = bad.idxmax(), cells().loc[bad.idxmax()]
            line = int((cells().loc[:i] == cell).sum()) + 1 if cell is not None else i + 2  # in that run's file
            why = (
                "is missing"
                if missing.loc[i]
                else "is not a number"
                if not_number.loc[i]
                else "is not a non-negative integer"
                if not_count.loc[i]
                else "is not finite in a run not diverged"
            )
            raise RowsError(
                f"{file_of(cell)}: line {line}: {column} {why} (got '{'' if empty.loc[i] else raw.loc[i]}')"
            )
