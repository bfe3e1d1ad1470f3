"""The replication scorecard: each claim of the paper checked against the pipeline's own tables.

`scorecard(tables)` returns one row per claim (`claim, paper_value, measured, threshold, verdict,
evidence, interval, reason`); verdict is `holds`, `fails`, `inconclusive` (an optimum it reads is
censored at a grid edge and the bound cannot decide, or its interval straddles the threshold:
`reason` says which) or `not measured` (a table it needs is absent or holds no rows for it). Every
threshold is stated in the row and sourced next to its constant (a paper number or the measured
seed noise). Where a configuration has seed replicates (several `train.seed` rows, or an
aggregated table with a standard-error column), a loss comparison's interval is ± twice the
combined standard error; without replicates it compares the point values. The paper's losses are
training losses, ours final validation losses: each row says so where it quotes a loss.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from umup_repro.core.figure_catalog import FIGURES
from umup_repro.results.claim_drift import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    MAX_DRIFT_LOG2,
    NOT_MEASURED,
    axis_drift,
    claim_stability_fixes,
    claim_width_drift,
)
from umup_repro.results.claim_measures import (
    FP8_TOLERANCE,
    GRAD_GAP_LOG2,
    SEARCH_TOLERANCE,
    UNIT_BAND,
    UNIT_SHARE,
    claim_mup_fp8,
    claim_mup_grads,
    claim_rms_end,
    claim_transfer_error,
    claim_umup_beats_mup,
    claim_umup_fp8,
    claim_unit_scale,
    read_table,
    search_vs_random,
)
from umup_repro.results.seed_noise import NOISE_SIGMAS

# The tables a claim may read, relative to the tables folder (what the Snakemake rule depends on):
# the scorecard figure's, in the figure catalog.
INPUTS = FIGURES["claims"].tables

# (claim, paper's value, threshold, evidence, how it is measured)
CLAIMS: list[tuple[str, str, str, str, Callable]] = [
    (
        "u-μP's optimal η drifts less across width than μP's and SP's",
        "|drift| at the largest width: u-μP 0, μP 1 (log2; Fig. 1b)",
        "|drift u-μP| ≤ |drift| of μP and of SP over their whole intervals (log2 of the fitted optimum,"
        " largest vs smallest width); a censored optimum is a bound",
        "transfer_summary.csv (lr_width); figures/transfer_width",
        claim_width_drift,
    ),
    (
        "u-μP's best loss ≤ μP's at equal width",
        "width 256: 3.289 vs 3.507; width 4096: 2.820 vs 2.884 (training loss)",
        f"u-μP − μP ≤ 0 beyond ± {NOISE_SIGMAS:g} combined standard errors of the seeds (0 without"
        " replicates), every width; a best η at its grid edge makes that loss a bound",
        "lr_width.csv; figures/transfer_width",
        claim_umup_beats_mup,
    ),
    (
        "u-μP's optimal η transfers across depth",
        "the paper sweeps depth 4…16 (docs/paper.md, Proxy setup); no optimum per depth is in our sources",
        f"|drift u-μP| < {MAX_DRIFT_LOG2:g} (log2; μP's drift across width in Fig. 1b) at the largest depth,"
        " whole interval",
        "transfer_summary.csv (lr_depth); figures/transfer_depth",
        axis_drift("lr_depth"),
    ),
    (
        "u-μP's optimal η transfers across batch size",
        "the paper sweeps batch 64…256 (docs/paper.md, Proxy setup); no optimum per batch is in our sources",
        f"|drift u-μP| < {MAX_DRIFT_LOG2:g} (log2; μP's drift across width in Fig. 1b) at the largest batch,"
        " whole interval",
        "transfer_summary.csv (lr_batch); figures/transfer_batch",
        axis_drift("lr_batch"),
    ),
    (
        "u-μP's optimal η transfers across training steps",
        "the paper sweeps steps 8192…32768 (docs/paper.md, Proxy setup); no optimum per step count is in our sources",
        f"|drift u-μP| < {MAX_DRIFT_LOG2:g} (log2; μP's drift across width in Fig. 1b) at the most steps,"
        " whole interval",
        "transfer_summary.csv (lr_steps); figures/transfer_steps",
        axis_drift("lr_steps"),
    ),
    (
        "u-μP-FP8 is within 1% of u-μP in FP32",
        "width 4096: 2.84 vs 2.82, +0.7% (training loss)",
        f"(FP8 − FP32)/FP32 ≤ {FP8_TOLERANCE:.0%} (ours, between the paper's +0.7% and μP-FP8's +133%)"
        " beyond ± noise, largest width",
        "fp8.csv; figures/fp8_training",
        claim_umup_fp8,
    ),
    (
        "μP-FP8 degrades",
        "width 4096: 6.75 vs 2.90 (fails to train; training loss)",
        f"(FP8 − FP32)/FP32 > {FP8_TOLERANCE:.0%} beyond ± noise (or every FP8 run diverged)",
        "fp8.csv; figures/fp8_training",
        claim_mup_fp8,
    ),
    (
        "u-μP tensors have unit scale at initialization",
        "every weight, activation, gradient ≈ 1 except logits (≈ 1/√width)",
        f"share of u-μP (tensor type, kind, width) with RMS in [{UNIT_BAND[0]:g}, {UNIT_BAND[1]:g}] ≥ {UNIT_SHARE:.0%}",
        "figures/rms_init (results/tables/figures/rms_init.csv)",
        claim_unit_scale,
    ),
    (
        "μP's gradients sit far below u-μP's at initialization (FP8 underflow)",
        "μP gradients near 2^-20, below E5M2's 2^-14; u-μP ≈ 2^0",
        f"median gradient RMS: u-μP / μP ≥ 2^{GRAD_GAP_LOG2:g}, largest common width",
        "figures/rms_init (results/tables/figures/rms_init.csv)",
        claim_mup_grads,
    ),
    (
        "End-of-training RMS depends mainly on η",
        "Fig. 14: RMS moves with η, little with width, depth, steps, batch",
        "median over tensor types of the spread of log2 RMS along η > along every other axis in the"
        " table; the axes of Fig. 14 it lacks are named in `measured`",
        "figures/rms_end (results/tables/figures/rms_end.csv)",
        claim_rms_end,
    ),
    (
        "u-μP's LR-only sweep ≈ random search",
        "u-μP: random search 3.281, LR sweep alone 3.287, +0.18% (Fig. 1a; training loss)",
        f"(LR-only − random)/random ≤ {SEARCH_TOLERANCE:.0%} (ours, between the paper's u-μP +0.18% and"
        " μP +5.0%) beyond ± noise, best loss of each",
        "search_random.csv, search_staged.csv (stage lr); figures/search_strategies",
        search_vs_random(lr_only=True),
    ),
    (
        "u-μP's full staged search ≈ random search",
        "not in the paper (its comparison is the LR-only sweep's, above); our staged search of Fig. 1a",
        f"(staged − random)/random ≤ {SEARCH_TOLERANCE:.0%} beyond ± noise, best loss of each",
        "search_random.csv, search_staged.csv; figures/search_strategies",
        search_vs_random(lr_only=False),
    ),
    (
        "HPs interdepend less under u-μP: mean pairwise transfer error u-μP < μP",
        "μP 0.03, u-μP 0.005 (Fig. 4)",
        "mean transfer error over HP pairs: u-μP < μP",
        "transfer_error.csv",
        claim_transfer_error,
    ),
    (
        "The stability fixes make μP's η transfer across width",
        "without them transfer breaks down (Fig. 2)",
        "|drift μP| (log2, largest width) without the fixes (llama) > with them (llama_fixes), over their"
        " whole intervals",
        "transfer_summary.csv (setting)",
        claim_stability_fixes,
    ),
]

COLUMNS = ["claim", "paper_value", "measured", "threshold", "verdict", "evidence", "interval", "reason"]


def scorecard(tables: str | os.PathLike = "results/tables", only: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per claim from the tables under `tables` (restricted to `only`, paths relative to
    it, when given: what the Snakemake rule passes, so a stale table is never read)."""
    tables = Path(tables)
    keep = None if only is None else {os.path.relpath(os.path.abspath(p), os.path.abspath(tables)) for p in only}
    loaded = {rel: read_table(tables, rel, keep) for rel in INPUTS}
    rows = []
    for claim, paper, threshold, evidence, measure in CLAIMS:
        try:
            measured, verdict, *rest = measure(loaded)
        except (KeyError, ValueError, IndexError) as err:  # a table without the columns it needs
            measured, verdict, rest = f"({type(err).__name__}: {err})", NOT_MEASURED, []
        interval, reason = ([*rest, "", ""])[:2]
        rows.append(
            {
                "claim": claim,
                "paper_value": paper,
                "measured": measured or "– (its tables are absent or hold no such runs)",
                "threshold": threshold,
                "verdict": verdict,
                "evidence": evidence,
                "interval": interval,
                "reason": reason,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


__all__ = ["CLAIMS", "COLUMNS", "FAILS", "HOLDS", "INCONCLUSIVE", "INPUTS", "NOT_MEASURED", "scorecard"]
