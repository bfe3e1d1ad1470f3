"""The aggregated tables as the figures read them (layout: docs/design.md):

- `<sweep>.csv`: one row per cell (flattened config, `search.*` columns, summary metrics),
- `metrics/<sweep>.csv`: `cell` + the run's `step, tokens, train_loss, val_loss, lr` (long),
- `rms/<sweep>.csv`: `cell` + the run's `step, tensor, kind, rms` (long),
- `coord_check/<parametrization>/coord_check.csv`: what `umup-repro coord-check` writes.

"Loss" is `final_val_loss`; a diverged cell (`diverged` true) never counts as a loss, whatever
its table holds (`prepare` sets its `loss` to NaN).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

LOSS = "final_val_loss"
# The swept axes of the end-of-training RMS (figure rms_end, paper Fig. 14, and its claim): short labels.
RMS_END_AXIS_LABEL = {
    "train.lr": "η",
    "model.width": "width",
    "model.depth": "depth",
    "train.steps": "steps",
    "train.batch_size": "batch",
}


def _as_bool(series: pd.Series) -> pd.Series:
    """CSV booleans (True/False, true/false, 1/0, empty) → bool (empty: False)."""
    if series.dtype == bool:
        return series
    return series.map(lambda v: str(v).strip().lower() in ("true", "1", "1.0", "yes"))


def _variant(parametrization: str, fp8: bool, scheme: str) -> str:
    """`umup_fp8` / `mup_fp8` for FP8 runs (suffix `_all` under the all_hidden scheme), else the
    parametrization itself."""
    if not (fp8 or parametrization.endswith("_fp8")):
        return parametrization
    variant = parametrization if parametrization.endswith("_fp8") else f"{parametrization}_fp8"
    return variant + "_all" if scheme == "all_hidden" else variant


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Normalise a main table: boolean `diverged`, `loss` (NaN where diverged or not finite),
    `variant` (the parametrization, `mup_fp8` for μP with `model.fp8`, and a suffix `_all` for
    FP8 runs under `model.fp8_scheme: all_hidden`, the proxy experiments' cast of every matmul)."""
    df = df.copy()
    df["diverged"] = _as_bool(df["diverged"]) if "diverged" in df else False
    loss = pd.to_numeric(df[LOSS], errors="coerce") if LOSS in df else pd.Series(np.nan, index=df.index)
    df["loss"] = loss.where(~df["diverged"] & np.isfinite(loss))
    fp8 = _as_bool(df["model.fp8"]) if "model.fp8" in df else pd.Series(False, index=df.index)
    scheme = df["model.fp8_scheme"].astype(str) if "model.fp8_scheme" in df else pd.Series("selective", index=df.index)
    df["variant"] = [_variant(p, f, s) for p, f, s in zip(df["parametrization"].astype(str), fp8, scheme)]
    if "cell" in df:  # a table listed twice; a cell shared by two sweeps stays in both
        # (a staged search's `combined` run that repeats an earlier stage's config is its own row)
        keys = [k for k in ("cell", "sweep", "search.stage") if k in df]
        df = df.drop_duplicates(keys)
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


def load_coord_check(tables: str | os.PathLike, parametrizations: Sequence[str] = ()) -> pd.DataFrame:
    """`<tables>/coord_check/<p>/coord_check.csv` of each parametrization (all found if none given)."""
    root = Path(tables) / "coord_check"
    names = list(parametrizations) or sorted(p.name for p in root.glob("*") if (p / "coord_check.csv").exists())
    frames = []
    for p in names:
        path = root / p / "coord_check.csv"
        if not path.exists():
            raise FileNotFoundError(
                f"figures: {path} is missing; run `umup-repro coord-check --parametrization {p} --out {root / p}`"
            )
        frames.append(pd.read_csv(path))
    if not frames:
        raise FileNotFoundError(f"figures: no coord_check tables under {root}")
    return pd.concat(frames, ignore_index=True)


def pick_cell(g: pd.DataFrame) -> pd.Series | None:
    """The cell a per-configuration figure shows: the best non-diverged loss, else any."""
    if g.empty:
        return None
    ok = g[g["loss"].notna()]
    return ok.loc[ok["loss"].idxmin()] if len(ok) else g.iloc[0]


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


def rms_long(rms: pd.DataFrame, main: pd.DataFrame) -> pd.DataFrame:
    """RMS rows joined with their cell's config; `type` (tensor kind without block index) and
    `group` added. Values that are not positive and finite are dropped (log axes)."""
    keep = [
        c
        for c in (
            "cell",
            "variant",
            "diverged",
            "loss",
            "model.width",
            "model.depth",
            "train.lr",
            "train.steps",
            "train.batch_size",
        )
        if c in main
    ]
    rms = rms.drop_duplicates(["cell", "step", "tensor", "kind"])  # cells shared between sweeps
    df = rms.merge(main[keep].drop_duplicates("cell"), on="cell", how="inner")
    df["rms"] = pd.to_numeric(df["rms"], errors="coerce")
    df = df[np.isfinite(df["rms"]) & (df["rms"] > 0)].copy()
    df["type"] = df["tensor"].map(tensor_type)
    df["group"] = df["type"].map(tensor_group)
    return df


def median_over_blocks(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Median RMS over the blocks (and duplicate cells) of each tensor type."""
    return df.groupby(by + ["kind", "type", "group"], as_index=False)["rms"].median()


__all__ = [
    "LOSS",
    "load_coord_check",
    "load_table",
    "median_over_blocks",
    "pick_cell",
    "prepare",
    "rms_long",
    "tensor_group",
    "tensor_type",
]


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x (the exponent p in y ∝ x^p)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = (x > 0) & (y > 0) & np.isfinite(y)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def width_slopes(table: pd.DataFrame, kind: str = "activation") -> pd.DataFrame:
    """Least-squares slope of log2(rms) against log2(width), per step and tensor."""
    sel = table[table["kind"] == kind]
    out = []
    for (step, tensor), g in sel.groupby(["step", "tensor"]):
        slope = loglog_slope(g["width"], g["rms"])
        spread = g["rms"].max() / g["rms"].min() - 1
        out.append({"step": step, "tensor": tensor, "slope": slope, "spread": spread})
    return pd.DataFrame(out)
