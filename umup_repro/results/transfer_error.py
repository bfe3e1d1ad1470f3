"""Pairwise transfer error (paper Fig. 4): how much loss a search of one HP costs when another HP
sits at a wrong value, i.e. how interdependent two HPs are.

Definition: a reconstruction. The paper defines the error in its Algorithm 1 (arXiv 2407.17465v3),
whose text was not found in any source readable offline (docs/paper.md#reference-numbers); this
docstring is the one place the definition lives. Given a *fixed*
HP with values F = {f_1 … f_n}, a *transfer* HP with values T, and the final validation loss
L(f, t) of every pair (every other HP at its default),

    (f*, t*) = argmin L
    error    = 1/(n − 1) · Σ_{f ≠ f*} [ L(f*, argmin_t L(f, t)) − L(f*, t*) ]

the loss at the best fixed value when the transfer HP was tuned at another fixed value, averaged
over those other values. Independent HPs (the same best t for every f) give 0. The paper reports
the mean over all ordered pairs: μP ≈ 0.03, u-μP ≈ 0.005.

Our choices where the paper says nothing: L(f, t) is the mean over seed replicates; a diverged
run (any replicate) counts as the worst finite loss of its grid, so a transfer into divergence
costs the most the grid shows and the error stays finite; argmin ties go to the first value in
grid order.

A pair-grid sweep (`pairs: true`) has one block per pair, a `grid` of exactly two keys; each
block gives both orders (a fixed, b transfer; and b fixed, a transfer).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from umup_repro.core.atomic import write_text
from umup_repro.results.replicates import by_value, stats
from umup_repro.sweeps.grid import axis_values, expand_sweep
from umup_repro.sweeps.presets import PresetError, default_preset, load_preset

COLUMNS = [
    "parametrization",
    "hp_a",
    "hp_b",
    "transfer_error",
    "sweep",
    "block",
    "n_a",
    "n_b",
    "opt_a",
    "opt_b",
    "best_loss",
    "seeds_n",
    "diverged",
]


def transfer_error(loss: np.ndarray) -> float:
    """The transfer error (module docstring; our reconstruction of Algorithm 1) on a grid
    `loss[i, j]` = L(f_i, t_j) (rows: the fixed HP; NaN/inf: diverged)."""
    loss = np.asarray(loss, dtype=float)
    finite = np.isfinite(loss)
    if not finite.any() or loss.shape[0] < 2:
        return float("nan")
    loss = np.where(finite, loss, loss[finite].max())
    f_star, t_star = np.unravel_index(np.argmin(loss), loss.shape)
    errs = [loss[f_star, np.argmin(loss[f])] - loss[f_star, t_star] for f in range(loss.shape[0]) if f != f_star]
    return float(np.mean(errs))


def _index(values: list[float], v: float):
    """Position of `v` in the grid (a CSV round trip may move a float by an ulp)."""
    hits = [i for i, x in enumerate(values) if np.isclose(x, v, rtol=1e-9, atol=0)]
    return hits[0] if hits else None


def _grid(rows: pd.DataFrame, a: str, b: str, a_values: list, b_values: list) -> tuple[np.ndarray, int]:
    """L(a_i, b_j): mean loss over replicates (inf: diverged, NaN: no run), and the fewest replicates."""
    out = np.full((len(a_values), len(b_values)), np.nan)
    fewest = 0
    groups = by_value(rows.assign(_pair=list(zip(rows[a].astype(float), rows[b].astype(float)))), "_pair")
    for (va, vb), losses in groups.items():
        i, j = _index(a_values, va), _index(b_values, vb)
        if i is not None and j is not None:
            mean, _, n = stats(losses)
            out[i, j] = mean
            fewest = n if fewest == 0 else min(fewest, n)
    return out, fewest


def pair_rows(table: pd.DataFrame, sweep: str, spec: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[dict]:
    """Both orders of every pair block of a pair-grid sweep, from its table."""
    rows = []
    for i, block in enumerate(spec["blocks"]):
        keys = list(block.get("grid", {}))
        if len(keys) != 2:
            raise PresetError(f"sweep {sweep}, block {i}: a pair grid needs exactly two grid keys, got {keys}")
        one = {**spec, "blocks": [block]}
        ids = {c.id for c in expand_sweep(sweep, one, defaults)}
        sub = table[table["cell"].isin(ids)]
        if sub.empty:
            continue
        values = {k: [float(v) for v in axis_values(k, block["grid"][k])] for k in keys}
        param = "/".join(sorted(sub["parametrization"].astype(str).unique()))
        for a, b in (keys, keys[::-1]):
            loss, seeds = _grid(sub, a, b, values[a], values[b])
            filled = np.where(np.isfinite(loss), loss, np.inf)
            ia, ib = np.unravel_index(np.argmin(filled), loss.shape)
            rows.append(
                {
                    "parametrization": param,
                    "hp_a": a,
                    "hp_b": b,
                    "transfer_error": transfer_error(loss),
                    "sweep": sweep,
                    "block": i,
                    "n_a": len(values[a]),
                    "n_b": len(values[b]),
                    "opt_a": values[a][ia],
                    "opt_b": values[b][ib],
                    "best_loss": float(filled[ia, ib]),
                    "seeds_n": seeds,
                    "diverged": int(np.isinf(loss).sum()),
                }
            )
    return rows


def write_table(config: Mapping[str, Any], sweeps: list[str], tables: str | Path, out: str | Path) -> pd.DataFrame:
    rows = []
    for sweep in sweeps:
        path = Path(tables) / f"{sweep}.csv"
        try:
            table = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            from umup_repro.core.errors import UserError

            raise UserError(f"{path}: not a readable table ({' '.join(str(err).split())[:160]})") from None
        rows += pair_rows(table, sweep, config["sweeps"][sweep], config.get("defaults", {}))
    result = pd.DataFrame(rows, columns=COLUMNS)
    write_text(out, result.to_csv(index=False))
    return result


def main(args) -> int:
    """`umup-repro transfer-error`: results/tables/transfer_error.csv from the pair-grid tables."""
    try:
        config = load_preset(args.preset or default_preset())
        result = write_table(config, args.sweep, args.tables, args.out)
    except (PresetError, FileNotFoundError) as err:
        print(f"umup-repro transfer-error: error: {err}", file=sys.stderr)
        return 2
    for param, g in result.groupby("parametrization"):
        print(f"{param}: mean transfer error {g['transfer_error'].mean():.4f} over {len(g)} ordered pairs")
    print(f"wrote {args.out}")
    return 0
