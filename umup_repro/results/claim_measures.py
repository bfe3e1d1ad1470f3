"""How each claim of the scorecard is measured from the pipeline's tables, with its threshold:
every threshold constant here is justified beside it. `umup_repro.results.claims` lists the claims
(`CLAIMS`) and runs them; a measure takes the loaded tables ({path: DataFrame or None}) and returns
(what was measured, verdict).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from umup_repro.core import parametrizations
from umup_repro.results.seed_noise import best_per, loss_stats
from umup_repro.results.seed_noise import margin as _margin
from umup_repro.results.stability import with_setting
from umup_repro.results.tables import RMS_END_AXIS_LABEL, prepare

HOLDS, FAILS, NOT_MEASURED = "holds", "fails", "not measured"

# A drift of one factor of 2 in η: the `tiny` grid's spacing (two steps of the paper's √2 grid);
# u-μP's loss near its optimum is flat within that (docs/results-tiny.md).
MAX_DRIFT_LOG2 = 1.0
# The paper's FP8 criterion: u-μP-FP8 within 1% of FP32 (+0.8% at width 4096); a larger relative
# loss increase is what "degrades" means for μP-FP8.
FP8_TOLERANCE = 0.01
# Unit scale at init: RMS in [2^-1, 2^2] (measured bands: docs/model.md, "The parametrizations"), for at
# least 80% of u-μP's tensor types; the rest are the documented exceptions (logits at 1/√width, q/k
# gradients below 1).
UNIT_BAND = (0.5, 4.0)
UNIT_SHARE = 0.8
# "Far below": μP's median gradient RMS at least 4 binades (16×) under u-μP's, more than the
# spread of u-μP's own tensor types at init (its lowest, the q/k gradients, sit near 2^-3…2^-4).
GRAD_GAP_LOG2 = 4.0
E5M2_MIN_NORMAL = 2.0**-14  # gradients below it lose precision (subnormal) or flush to zero
# Independent search ≈ random search: within 1% of the random search's best loss (the paper's
# u-μP LR-only sweep is 0.2% from random search: 3.287 vs 3.281).
SEARCH_TOLERANCE = 0.01

# The parametrizations the width-drift claim compares (the paper's three), labelled by the catalog.
_COMPARED = ("umup", "mup", "sp")


# ---------------------------------------------------------------------------------------------
# reading tables


def read_table(tables: Path, rel: str, only: set[str] | None) -> pd.DataFrame | None:
    """A table, or None if it is absent, empty or not among `only` (the rule's inputs)."""
    if only is not None and rel not in only:
        return None
    path = tables / rel
    if not path.exists():
        return None
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:  # a damaged table: named, exit 2 (cli.py)
        from umup_repro.core.errors import UserError

        raise UserError(
            f"{path}: not a readable table ({' '.join(str(err).split())[:160]}); rerun the rule that writes it"
        ) from None
    return df if len(df) else None


def _fmt(x: float, nd: int = 3) -> str:
    return "–" if x is None or not math.isfinite(float(x)) else f"{float(x):.{nd}f}"


def _pm(sem: float) -> str:
    return f" ± {_fmt(sem)}" if sem is not None and math.isfinite(float(sem)) else ""


def _drift_rows(ts: pd.DataFrame | None, sweep: str) -> pd.DataFrame:
    """transfer_summary rows of one sweep's LR transfer, in the default setting (all our sweeps
    use the stability fixes) where the sweep has several."""
    if ts is None:
        return pd.DataFrame(columns=["group", "axis_value", "drift_log2"])
    rows = with_setting(ts[(ts["sweep"] == sweep) & (ts["hp"] == "train.lr")])
    if rows["setting"].nunique(dropna=True) > 1 or rows["setting"].notna().all():
        plain = rows[rows["setting"].isna() | (rows["setting"].astype(str) == "llama_fixes")]
        rows = plain if len(plain) else rows
    return rows


def drift_at_largest(rows: pd.DataFrame) -> dict[str, float]:
    """Per group: drift_log2 of the optimum at the largest axis value (NaN if none there)."""
    out = {}
    for group, g in rows.groupby("group"):
        g = g[pd.to_numeric(g["axis_value"], errors="coerce") == pd.to_numeric(g["axis_value"]).max()]
        out[str(group)] = float(pd.to_numeric(g["drift_log2"], errors="coerce").iloc[0]) if len(g) else float("nan")
    return out


# ---------------------------------------------------------------------------------------------
# the claims: each returns (measured, verdict) from the tables it is given


def claim_width_drift(t) -> tuple[str, str]:
    drift = drift_at_largest(_drift_rows(t["transfer_summary.csv"], "lr_width"))
    drift = {p: d for p, d in drift.items() if p in _COMPARED and math.isfinite(d)}
    if "umup" not in drift or len(drift) < 2:
        return "", NOT_MEASURED
    measured = ", ".join(f"{parametrizations.get(p).display} {drift[p]:+g}" for p in _COMPARED if p in drift)
    ok = all(abs(drift["umup"]) <= abs(d) for p, d in drift.items() if p != "umup")
    return measured, HOLDS if ok else FAILS


def axis_drift(sweep: str) -> Callable:
    def claim(t) -> tuple[str, str]:
        drift = drift_at_largest(_drift_rows(t["transfer_summary.csv"], sweep)).get("umup", float("nan"))
        if not math.isfinite(drift):
            return "", NOT_MEASURED
        return f"u-μP {drift:+g}", HOLDS if abs(drift) <= MAX_DRIFT_LOG2 else FAILS

    return claim


def claim_umup_beats_mup(t) -> tuple[str, str]:
    df = t["lr_width.csv"]
    if df is None:
        return "", NOT_MEASURED
    best = best_per(loss_stats(df, ["variant", "model.width", "train.lr"]), ["variant", "model.width"])
    u, m = (best[best["variant"] == v].set_index("model.width") for v in ("umup", "mup"))
    widths = sorted(set(u.index) & set(m.index))
    if not widths:
        return "", NOT_MEASURED
    parts, ok = [], True
    for w in widths:
        lu, lm = u.loc[w], m.loc[w]
        ok &= bool(lu["loss"] - lm["loss"] <= _margin(lu["sem"], lm["sem"]))
        parts.append(f"width {int(w)}: {_fmt(lu['loss'])}{_pm(lu['sem'])} vs {_fmt(lm['loss'])}{_pm(lm['sem'])}")
    return "; ".join(parts), HOLDS if ok else FAILS


def fp8_gap(df: pd.DataFrame, base: str) -> tuple[float, float, float, float, int] | None:
    """(relative loss change FP8 vs FP32, its noise margin, FP32 loss, FP8 loss, width) at the largest
    width both variants ran, each at its best η; the change is +inf if every FP8 run diverged."""
    stats = loss_stats(df, ["variant", "model.width", "train.lr"])
    if "model.width" not in stats:
        stats["model.width"] = 0
    ran = stats.groupby(["variant", "model.width"]).size().reset_index()
    widths = sorted(
        set(ran.loc[ran["variant"] == base, "model.width"])
        & set(ran.loc[ran["variant"] == f"{base}_fp8", "model.width"])
    )
    if not widths:
        return None
    w = widths[-1]
    best = best_per(stats[stats["model.width"] == w], ["variant"]).set_index("variant")
    if base not in best.index:
        return None
    b = best.loc[base]
    if f"{base}_fp8" not in best.index:
        return float("inf"), 0.0, float(b["loss"]), float("nan"), int(w)
    f = best.loc[f"{base}_fp8"]
    rel = (f["loss"] - b["loss"]) / b["loss"]
    return float(rel), _margin(b["sem"], f["sem"]) / float(b["loss"]), float(b["loss"]), float(f["loss"]), int(w)


def _fp8_measured(gap) -> str:
    rel, margin, lb, lf, w = gap
    noise = f" (noise ± {100 * margin:.1f}%)" if margin > 0 else ""
    change = "diverged" if math.isinf(rel) else f"{100 * rel:+.1f}%{noise}"
    return f"width {w}: {_fmt(lf)} vs {_fmt(lb)}, {change}"


def claim_umup_fp8(t) -> tuple[str, str]:
    gap = fp8_gap(t["fp8.csv"], "umup") if t["fp8.csv"] is not None else None
    if gap is None:
        return "", NOT_MEASURED
    return _fp8_measured(gap), HOLDS if gap[0] <= FP8_TOLERANCE + gap[1] else FAILS


def claim_mup_fp8(t) -> tuple[str, str]:
    gap = fp8_gap(t["fp8.csv"], "mup") if t["fp8.csv"] is not None else None
    if gap is None:
        return "", NOT_MEASURED
    return _fp8_measured(gap), HOLDS if gap[0] > FP8_TOLERANCE + gap[1] else FAILS


def _init_rms(t, variant: str) -> pd.DataFrame:
    df = t["figures/rms_init.csv"]
    if df is None or "variant" not in df:
        return pd.DataFrame()
    return df[(df["variant"] == variant) & np.isfinite(pd.to_numeric(df["rms"], errors="coerce"))]


def claim_unit_scale(t) -> tuple[str, str]:
    u = _init_rms(t, "umup")
    if u.empty:
        return "", NOT_MEASURED
    inside = u["rms"].between(*UNIT_BAND)
    share = float(inside.mean())
    outside = sorted(set(u.loc[~inside, "type"] + " " + u.loc[~inside, "kind"]))
    measured = f"{share:.0%} of {len(u)} (tensor type, kind, width)" + (
        f"; outside: {', '.join(outside[:4])}{' …' if len(outside) > 4 else ''}" if outside else ""
    )
    return measured, HOLDS if share >= UNIT_SHARE else FAILS


def claim_mup_grads(t) -> tuple[str, str]:
    u, m = (_init_rms(t, v) for v in ("umup", "mup"))
    if u.empty or m.empty:
        return "", NOT_MEASURED
    u, m = u[u["kind"] == "grad"], m[m["kind"] == "grad"]
    widths = sorted(set(u["width"]) & set(m["width"]))
    if not widths:
        return "", NOT_MEASURED
    w = widths[-1]
    gu, gm = u[u["width"] == w]["rms"], m[m["width"] == w]["rms"]
    gap = math.log2(gu.median()) - math.log2(gm.median())
    under = int((gm < E5M2_MIN_NORMAL).sum())
    measured = (
        f"width {int(w)}: median gradient RMS μP 2^{math.log2(gm.median()):.1f} vs u-μP "
        f"2^{math.log2(gu.median()):.1f}; μP below 2^-14: {under} of {len(gm)} tensor types"
    )
    return measured, HOLDS if gap >= GRAD_GAP_LOG2 else FAILS


def claim_rms_end(t) -> tuple[str, str]:
    df = t["figures/rms_end.csv"]
    if df is None or "axis" not in df:
        return "", NOT_MEASURED
    df = df[np.isfinite(pd.to_numeric(df["rms"], errors="coerce")) & (df["rms"] > 0)]
    spread = {}
    for axis, g in df.groupby("axis"):
        if g["value"].nunique() < 2:
            continue
        per_type = g.groupby(["kind", "type"])["rms"].agg(lambda r: np.log2(r.max()) - np.log2(r.min()))
        spread[axis] = float(per_type.median())
    if "train.lr" not in spread or len(spread) < 2:
        return "", NOT_MEASURED
    measured = ", ".join(
        f"{RMS_END_AXIS_LABEL.get(a, a)} {s:.1f}" for a, s in sorted(spread.items(), key=lambda kv: -kv[1])
    )
    ok = all(spread["train.lr"] > s for a, s in spread.items() if a != "train.lr")
    return measured, HOLDS if ok else FAILS


def claim_search(t) -> tuple[str, str]:
    tables = [
        df.assign(_source=name)
        for name, df in (("random", t["search_random.csv"]), ("independent", t["search_staged.csv"]))
        if df is not None
    ]
    if not tables:
        return "", NOT_MEASURED
    runs = prepare(pd.concat(tables, ignore_index=True))
    runs = runs[runs["variant"] == "umup"]
    # a run is random or independent (LR, HP or combined stage) by its search.kind, else by its table
    if "search.kind" in runs:
        strategy = np.where(runs["search.kind"].astype(str) == "random", "random", "independent")
    else:
        strategy = runs["_source"].to_numpy()
    best = {}
    for name in ("random", "independent"):
        rows = runs[strategy == name]
        if rows.empty:
            return "", NOT_MEASURED
        stats = loss_stats(
            rows,
            [
                c
                for c in rows.columns
                if c.startswith(("train.", "hp.", "model.")) and c != "train.seed" and rows[c].nunique(dropna=False) > 1
            ],
        )
        if stats["loss"].notna().sum() == 0:
            return "", NOT_MEASURED
        best[name] = (stats.loc[stats["loss"].idxmin()], len(rows))
    (r, nr), (i, ni) = best["random"], best["independent"]
    rel = (i["loss"] - r["loss"]) / r["loss"]
    margin = _margin(r["sem"], i["sem"]) / r["loss"]
    measured = (
        f"u-μP independent {_fmt(i['loss'])} ({ni} runs) vs random {_fmt(r['loss'])} ({nr} runs), {100 * rel:+.1f}%"
    )
    return measured, HOLDS if rel <= SEARCH_TOLERANCE + margin else FAILS


def claim_transfer_error(t) -> tuple[str, str]:
    df = t["transfer_error.csv"]
    if df is None or "transfer_error" not in df:
        return "", NOT_MEASURED
    mean = df.groupby("parametrization")["transfer_error"].mean()
    if not {"umup", "mup"} <= set(mean.index):
        return "", NOT_MEASURED
    measured = f"mean over HP pairs: u-μP {mean['umup']:.3g}, μP {mean['mup']:.3g}"
    return measured, HOLDS if mean["umup"] < mean["mup"] else FAILS


def claim_stability_fixes(t) -> tuple[str, str]:
    ts = t["transfer_summary.csv"]
    if ts is None:
        return "", NOT_MEASURED
    ts = with_setting(ts)
    rows = ts[(ts["hp"] == "train.lr") & (ts["axis"] == "model.width") & (ts["group"] == "mup")]
    drift = {}
    for setting in ("llama", "llama_fixes"):
        d = drift_at_largest(rows[rows["setting"] == setting]).get("mup", float("nan"))
        if not math.isfinite(d):
            return "", NOT_MEASURED
        drift[setting] = d
    measured = f"μP drift without fixes {drift['llama']:+g}, with fixes {drift['llama_fixes']:+g}"
    return measured, HOLDS if abs(drift["llama"]) > abs(drift["llama_fixes"]) else FAILS
