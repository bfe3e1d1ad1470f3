"""How each claim of the scorecard is measured from the pipeline's tables, with its threshold:
every threshold constant here is justified beside it. `umup_repro.results.claims` lists the claims
(`CLAIMS`) and runs them; a measure takes the loaded tables ({path: DataFrame or None}) and returns
(what was measured, verdict, interval, reason). A loss comparison is `inconclusive` when the
difference lies within the seed-noise margin (NOISE_SIGMAS combined standard errors) or when a
side's best loss sits at the edge of its η grid (then it is only an upper bound) and that bound
cannot decide. The drift claims are in umup_repro/results/claim_drift.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from umup_repro.results.claim_drift import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED
from umup_repro.results.seed_noise import best_per, loss_stats, pooled_sigma
from umup_repro.results.seed_noise import margin as _margin
from umup_repro.results.tables import RMS_END_AXIS_LABEL, prepare

# FP8 "within" / "degrades": a relative loss change of 1%, our tolerance between the paper's two
# FP8 numbers at width 4096 (docs/paper.md, "FP8"): u-μP-FP8 +0.7% (2.84 vs 2.82), μP-FP8 +133%
# (6.75 vs 2.90). The paper states no criterion of its own.
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
# Independent search ≈ random search: within 1% of the random search's best loss, our tolerance
# between the paper's two gaps (Fig. 1a, docs/paper.md "Reference numbers"): u-μP's LR-only sweep
# +0.18% (3.287 vs 3.281), which the paper calls close, and μP's +5.0% (3.478 vs 3.313).
SEARCH_TOLERANCE = 0.01
# Fig. 14's axes of the end-of-training RMS (docs/paper.md, "Figures").
FIG14_AXES = ("train.lr", "model.width", "model.depth", "train.steps", "train.batch_size")


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


# ---------------------------------------------------------------------------------------------
# the claims: each returns (measured, verdict) from the tables it is given


def decide(diff: float, margin: float, tol: float = 0.0, above: bool = False) -> str:
    """Verdict of `diff ≤ tol` (or `diff > tol` with `above`) when `diff` is known within ± margin."""
    if diff + margin <= tol:
        return FAILS if above else HOLDS
    if diff - margin > tol:
        return HOLDS if above else FAILS
    return INCONCLUSIVE


def _edge(stats: pd.DataFrame, best: pd.Series, by: list[str]) -> str:
    """'lower'/'upper' when `best`'s η is the edge of its line's η grid (its loss is then only an
    upper bound of the line's best), 'single η' for a line of one η, else ''."""
    line = stats
    for k in by:
        line = line[line[k] == best[k]]
    lrs = sorted(line.loc[line["loss"].notna(), "train.lr"]) if "train.lr" in line else []
    if len(lrs) < 2:
        return "single η"
    return "lower" if best["train.lr"] == lrs[0] else "upper" if best["train.lr"] == lrs[-1] else ""


def claim_umup_beats_mup(t) -> tuple[str, str, str, str]:
    df = t["lr_width.csv"]
    if df is None:
        return "", NOT_MEASURED, "", ""
    stats = loss_stats(df, ["variant", "model.width", "train.lr"])
    best = best_per(stats, ["variant", "model.width"])
    u, m = (best[best["variant"] == v].set_index("model.width", drop=False) for v in ("umup", "mup"))
    widths = sorted(set(u.index) & set(m.index))
    if not widths:
        return "", NOT_MEASURED, "", ""
    parts, verdicts, intervals, reasons = [], [], [], []
    for w in widths:
        lu, lm = u.loc[w], m.loc[w]
        d, mg = float(lu["loss"] - lm["loss"]), _margin(lu["sem"], lm["sem"])
        v = decide(d, mg)
        edges = {n: _edge(stats, r, ["variant", "model.width"]) for n, r in (("u-μP", lu), ("μP", lm))}
        # a side at its grid edge is an upper bound: it can still make the other side lose, not win
        if v == HOLDS and edges["μP"] or v == FAILS and edges["u-μP"]:
            side = "μP" if v == HOLDS else "u-μP"
            v = INCONCLUSIVE
            reasons.append(f"width {int(w)}: {side}'s best η at its grid's {edges[side]} edge, its loss an upper bound")
        elif v == INCONCLUSIVE:
            reasons.append(f"width {int(w)}: difference {d:+.3f} within noise ± {mg:.3f}")
        verdicts.append(v)
        intervals.append(f"width {int(w)}: {d - mg:+.3f}…{d + mg:+.3f}")
        parts.append(f"width {int(w)}: {_fmt(lu['loss'])}{_pm(lu['sem'])} vs {_fmt(lm['loss'])}{_pm(lm['sem'])}")
    verdict = FAILS if FAILS in verdicts else INCONCLUSIVE if INCONCLUSIVE in verdicts else HOLDS
    return "; ".join(parts) + " (final validation loss)", verdict, "; ".join(intervals), "; ".join(reasons)


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


def _fp8_measured(gap, lrs: int) -> str:
    rel, margin, lb, lf, w = gap
    noise = f" (noise ± {100 * margin:.1f}%)" if margin > 0 else ""
    change = "diverged" if math.isinf(rel) else f"{100 * rel:+.1f}%{noise}"
    eta = "best of its η grid each" if lrs > 1 else "one η per variant (the sweep's; not each variant's best η)"
    return f"width {w}: {_fmt(lf)} vs {_fmt(lb)}, {change}; {eta}; final validation loss"


def _fp8_claim(t, base: str, above: bool) -> tuple[str, str, str, str]:
    df = t["fp8.csv"]
    gap = fp8_gap(df, base) if df is not None else None
    if gap is None:
        return "", NOT_MEASURED, "", ""
    lrs = int(df["train.lr"].nunique()) if "train.lr" in df else 1
    rel, margin = gap[0], gap[1]
    verdict = decide(rel, margin, FP8_TOLERANCE, above)
    interval = "diverged" if math.isinf(rel) else f"{100 * (rel - margin):+.1f}%…{100 * (rel + margin):+.1f}%"
    reason = f"the change's interval {interval} straddles {FP8_TOLERANCE:.0%}" if verdict == INCONCLUSIVE else ""
    return _fp8_measured(gap, lrs), verdict, interval, reason


def claim_umup_fp8(t) -> tuple[str, str, str, str]:
    return _fp8_claim(t, "umup", above=False)


def claim_mup_fp8(t) -> tuple[str, str, str, str]:
    return _fp8_claim(t, "mup", above=True)


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


def claim_rms_end(t) -> tuple[str, str, str, str]:
    df = t["figures/rms_end.csv"]
    if df is None or "axis" not in df:
        return "", NOT_MEASURED, "", ""
    df = df[np.isfinite(pd.to_numeric(df["rms"], errors="coerce")) & (df["rms"] > 0)]
    spread = {}
    for axis, g in df.groupby("axis"):
        if g["value"].nunique() < 2:
            continue
        per_type = g.groupby(["kind", "type"])["rms"].agg(lambda r: np.log2(r.max()) - np.log2(r.min()))
        spread[axis] = float(per_type.median())
    if "train.lr" not in spread or len(spread) < 2:
        return "", NOT_MEASURED, "", ""
    measured = ", ".join(
        f"{RMS_END_AXIS_LABEL.get(a, a)} {s:.1f}" for a, s in sorted(spread.items(), key=lambda kv: -kv[1])
    )
    # the figure keeps, along each axis, only cells at the base point of the others (figures/rms.py
    # rms_end): an axis whose sweep runs at another base η than the LR sweep's has < 2 such values
    dropped = [RMS_END_AXIS_LABEL.get(a, a) for a in FIG14_AXES if a not in spread]
    if dropped:
        measured += (
            f"; of Fig. 14's axes dropped: {', '.join(dropped)} (fewer than 2 values at the base point"
            " of the other axes, e.g. their cells at another base η)"
        )
    ok = all(spread["train.lr"] > s for a, s in spread.items() if a != "train.lr")
    return measured, HOLDS if ok else FAILS, "", ""


def _search_best(rows: pd.DataFrame) -> pd.Series | None:
    varied = [
        c
        for c in rows.columns
        if c.startswith(("train.", "hp.", "model.")) and c != "train.seed" and rows[c].nunique(dropna=False) > 1
    ]
    stats = loss_stats(rows, varied)
    return None if stats["loss"].notna().sum() == 0 else stats.loc[stats["loss"].idxmin()]


def search_vs_random(lr_only: bool) -> Callable:
    """The search claim: u-μP's LR-only sweep (stage `lr` of the staged search; the paper's
    comparison, Fig. 1a) or the full staged search, against the random search's best loss."""

    def claim(t) -> tuple[str, str, str, str]:
        tables = [
            df.assign(_source=name)
            for name, df in (("random", t["search_random.csv"]), ("independent", t["search_staged.csv"]))
            if df is not None
        ]
        if not tables:
            return "", NOT_MEASURED, "", ""
        runs = prepare(pd.concat(tables, ignore_index=True))
        runs = runs[runs["variant"] == "umup"]
        # a run is random or independent (LR, HP or combined stage) by its search.kind, else by its table
        if "search.kind" in runs:
            strategy = np.where(runs["search.kind"].astype(str) == "random", "random", "independent")
        else:
            strategy = runs["_source"].to_numpy()
        picked = {"random": runs[strategy == "random"], "independent": runs[strategy == "independent"]}
        if lr_only:
            stage = picked["independent"].get("search.stage", pd.Series(dtype=str)).astype(str)
            picked["independent"] = picked["independent"][stage == "lr"]
        best = {n: (_search_best(r), len(r)) for n, r in picked.items() if not r.empty}
        if len(best) < 2 or any(b is None for b, _ in best.values()):
            return "", NOT_MEASURED, "", ""
        (r, nr), (i, ni) = best["random"], best["independent"]
        rel = float((i["loss"] - r["loss"]) / r["loss"])
        margin = _margin(r["sem"], i["sem"]) / float(r["loss"])
        name = "LR-only sweep" if lr_only else "staged search"
        measured = (
            f"u-μP {name} {_fmt(i['loss'])} ({ni} runs) vs random {_fmt(r['loss'])} ({nr} runs),"
            f" {100 * rel:+.1f}%; final validation loss"
        )
        verdict = decide(rel, margin, SEARCH_TOLERANCE)
        interval = f"{100 * (rel - margin):+.1f}%…{100 * (rel + margin):+.1f}%"
        reason = f"{interval} straddles {SEARCH_TOLERANCE:.0%}" if verdict == INCONCLUSIVE else ""
        return measured, verdict, interval, reason

    return claim


def claim_transfer_error(t) -> tuple[str, str, str, str]:
    df = t["transfer_error.csv"]
    if df is None or "transfer_error" not in df:
        return "", NOT_MEASURED, "", ""
    mean = df.groupby("parametrization")["transfer_error"].mean()
    if not {"umup", "mup"} <= set(mean.index):
        return "", NOT_MEASURED, "", ""
    measured = f"mean over HP pairs: u-μP {mean['umup']:.3g}, μP {mean['mup']:.3g}"
    # Noise: a pair's transfer error is a difference of two final losses (≈ √2 σ, σ one run's seed
    # noise pooled over the tables with replicates), averaged over that parametrization's pairs; the
    # two means' difference then has standard error √(2σ²/n_u + 2σ²/n_μ). Within NOISE_SIGMAS of it,
    # the comparison cannot decide (the argmin's selection bias is left out: the margin is a floor).
    sigma, _, _ = pooled_sigma([v for v in t.values() if isinstance(v, pd.DataFrame) and "replicate" in v])
    pairs = df.groupby("parametrization")["transfer_error"].count()
    diff = float(mean["umup"] - mean["mup"])
    if not math.isfinite(sigma):
        return measured, HOLDS if diff < 0 else FAILS, "", ""
    mg = _margin(math.sqrt(2 / pairs["umup"]) * sigma, math.sqrt(2 / pairs["mup"]) * sigma)
    interval = f"u-μP − μP {diff:+.3g} ± {mg:.2g} (seed noise σ {sigma:.2g})"
    if abs(diff) <= mg:
        return measured, INCONCLUSIVE, interval, "the difference lies within the seed-noise margin"
    return measured, HOLDS if diff < 0 else FAILS, interval, ""
