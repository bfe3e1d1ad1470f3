"""The scorecard's drift claims (η transfer across width, depth, batch, steps; the stability
fixes), read from transfer_summary.csv with each drift's interval and censoring.

A drift is the fitted optimum at the largest axis value minus the proxy's, in log2 units, with the
interval `drift_lo_log2 … drift_hi_log2` of umup_repro/results/optimum.py: open (±inf) on the side
a censored optimum (a grid edge) leaves unbounded. A table without those columns (older) gives the
grid drift `drift_log2` as a point. A verdict is `holds` or `fails` only if the whole interval
decides it; otherwise `inconclusive`, with the reason (a censored optimum whose bound cannot
decide, or an interval straddling the threshold).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from umup_repro.core import parametrizations
from umup_repro.results.optimum import fmt_bound
from umup_repro.results.stability import with_setting

HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED = "holds", "fails", "inconclusive", "not measured"

# "Transfers" along an axis: |drift| < 1 (log2 of η) at the largest value, less than the drift the
# paper shows for μP across width 256 → 4096 (one factor of 2, Fig. 1b; docs/paper.md, "Reference
# numbers"), which the paper presents as the transfer u-μP improves on.
MAX_DRIFT_LOG2 = 1.0

# The parametrizations the width-drift claim compares (the paper's three), labelled by the catalog.
_COMPARED = ("umup", "mup", "sp")


@dataclass
class Drift:
    """A drift at the largest axis value: fitted point, interval, which optimum is censored."""

    point: float
    lo: float
    hi: float
    censored: str  # e.g. "target upper, proxy lower"; "" when both optima are interior

    def text(self) -> str:
        return fmt_bound(self.point, self.lo, self.hi)

    def abs_bounds(self) -> tuple[float, float]:
        """The interval of |drift|."""
        a, b = abs(self.lo), abs(self.hi)
        return (0.0 if self.lo <= 0 <= self.hi else min(a, b)), max(a, b)


def _first(rows: pd.DataFrame, name: str, fallback: str) -> float:
    """rows' first value of `name`, or of `fallback` in a table written before `name` existed."""
    return float(pd.to_numeric(rows[name if name in rows else fallback], errors="coerce").iloc[0])


def drift_rows(ts: pd.DataFrame | None, sweep: str) -> pd.DataFrame:
    """transfer_summary rows of one sweep's LR transfer, in the default setting (all our sweeps
    use the stability fixes) where the sweep has several."""
    if ts is None:
        return pd.DataFrame(columns=["group", "axis_value", "drift_log2"])
    rows = with_setting(ts[(ts["sweep"] == sweep) & (ts["hp"] == "train.lr")])
    if rows["setting"].nunique(dropna=True) > 1 or rows["setting"].notna().all():
        plain = rows[rows["setting"].isna() | (rows["setting"].astype(str) == "llama_fixes")]
        rows = plain if len(plain) else rows
    return rows


def drift_at_largest(rows: pd.DataFrame) -> dict[str, Drift]:
    """Per group: the drift at the largest axis value (absent where there is none)."""
    out = {}
    for group, g in rows.groupby("group"):
        axis = pd.to_numeric(g["axis_value"], errors="coerce")
        at = g[axis == axis.max()]
        if not len(at):
            continue
        point = _first(at, "drift_fit_log2", "drift_log2")
        if math.isnan(point):  # no fit (a non-numeric HP): the grid drift
            point = _first(at, "drift_log2", "drift_log2")
        lo, hi = _first(at, "drift_lo_log2", "drift_log2"), _first(at, "drift_hi_log2", "drift_log2")
        if math.isnan(lo) or math.isnan(hi):  # no interval (no seed-noise estimate): the point
            lo = hi = point
        cens = []
        if "censored" in g:
            proxy = g[axis == pd.to_numeric(g["proxy_value"], errors="coerce")]
            for name, r in (("target", at), ("proxy", proxy)):
                c = str(r["censored"].iloc[0]) if len(r) and pd.notna(r["censored"].iloc[0]) else ""
                if c:
                    cens.append(f"{name} optimum at the {c} grid edge")
        if math.isfinite(point) or math.isinf(lo) or math.isinf(hi):
            out[str(group)] = Drift(point, lo, hi, ", ".join(cens))
    return out


def _why(d: Drift, what: str) -> str:
    if d.censored:
        return f"{what}: {d.censored}; the bound {d.text()} cannot decide"
    return f"{what}: interval {d.text()} straddles the threshold"


def claim_width_drift(t) -> tuple[str, str, str, str]:
    drift = drift_at_largest(drift_rows(t["transfer_summary.csv"], "lr_width"))
    drift = {p: d for p, d in drift.items() if p in _COMPARED}
    if "umup" not in drift or len(drift) < 2:
        return "", NOT_MEASURED, "", ""
    name = {p: parametrizations.get(p).display for p in drift}
    measured = ", ".join(f"{name[p]} {drift[p].text()}" for p in _COMPARED if p in drift)
    u_lo, u_hi = drift["umup"].abs_bounds()
    others = {p: d.abs_bounds() for p, d in drift.items() if p != "umup"}
    interval = "; ".join(f"|{name[p]}| {d.abs_bounds()[0]:.2g}…{d.abs_bounds()[1]:.2g}" for p, d in drift.items())
    if any(u_lo > hi for _, hi in others.values()):
        return measured, FAILS, interval, ""
    if all(u_hi <= lo for lo, _ in others.values()):
        return measured, HOLDS, interval, ""
    undecided = [p for p, (lo, hi) in others.items() if not (u_hi <= lo or u_lo > hi)]
    reason = "; ".join(_why(drift[p], name[p]) for p in ["umup", *undecided] if drift[p].censored) or (
        "the |drift| intervals of u-μP and " + ", ".join(name[p] for p in undecided) + " overlap"
    )
    return measured, INCONCLUSIVE, interval, reason


def axis_drift(sweep: str) -> Callable:
    def claim(t) -> tuple[str, str, str, str]:
        d = drift_at_largest(drift_rows(t["transfer_summary.csv"], sweep)).get("umup")
        if d is None:
            return "", NOT_MEASURED, "", ""
        interval = f"{d.lo:+.2g} … {d.hi:+.2g}"
        if -MAX_DRIFT_LOG2 < d.lo and d.hi < MAX_DRIFT_LOG2:
            return f"u-μP {d.text()}", HOLDS, interval, ""
        if d.lo >= MAX_DRIFT_LOG2 or d.hi <= -MAX_DRIFT_LOG2:
            return f"u-μP {d.text()}", FAILS, interval, ""
        return f"u-μP {d.text()}", INCONCLUSIVE, interval, _why(d, "u-μP")

    return claim


def claim_stability_fixes(t) -> tuple[str, str, str, str]:
    ts = t["transfer_summary.csv"]
    if ts is None:
        return "", NOT_MEASURED, "", ""
    ts = with_setting(ts)
    rows = ts[(ts["hp"] == "train.lr") & (ts["axis"] == "model.width") & (ts["group"] == "mup")]
    drift = {}
    for setting in ("llama", "llama_fixes"):
        d = drift_at_largest(rows[rows["setting"] == setting]).get("mup")
        if d is None:
            return "", NOT_MEASURED, "", ""
        drift[setting] = d
    without, with_ = drift["llama"], drift["llama_fixes"]
    measured = f"μP drift without fixes {without.text()}, with fixes {with_.text()}"
    (w_lo, w_hi), (f_lo, f_hi) = without.abs_bounds(), with_.abs_bounds()
    interval = f"|without| {w_lo:.2g}…{w_hi:.2g}; |with| {f_lo:.2g}…{f_hi:.2g}"
    if w_lo > f_hi:
        return measured, HOLDS, interval, ""
    if w_hi <= f_lo:
        return measured, FAILS, interval, ""
    reason = "; ".join(_why(d, n) for n, d in (("without", without), ("with", with_)) if d.censored)
    return measured, INCONCLUSIVE, interval, reason or "the two |drift| intervals overlap"


__all__ = [
    "FAILS",
    "HOLDS",
    "INCONCLUSIVE",
    "MAX_DRIFT_LOG2",
    "NOT_MEASURED",
    "Drift",
    "axis_drift",
    "claim_stability_fixes",
    "claim_width_drift",
    "drift_at_largest",
    "drift_rows",
]
