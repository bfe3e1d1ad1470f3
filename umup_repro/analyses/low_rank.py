"""Learning a low-rank matrix with a factorised model: plateaus and phase transitions.

Target C ∈ ℝ^{n×n} (n = 100) of rank k: C = Σ_{i≤k} a_i b_iᵀ with a_i, b_i independent uniformly
random unit vectors. Model Z = X Yᵀ with X, Y ∈ ℝ^{n×r} (r = 100), small init (entries
N(0, σ0²), σ0 = 10⁻³). Full-batch training for `steps` steps, 10 seeds per setting (the seed
draws the target and the init; the same seed gives the same target and init in every setting).

Losses (we record the *excess* over the infimum, which is 0 in both cases):

- ``mse``: ‖C − Z‖²_F (a sum over the n² entries).
- ``ce``: cross-entropy between p = softmax(β·vec C) and q = softmax(vec Z) over all n² entries,
  minus the entropy of p, i.e. KL(p‖q). It is computed as a log-sum-exp relative to p,
  KL = log Σ p·exp(D − m) with D = vec Z − β·vec C and m = Σ p·D, via log1p/expm1, which stays
  accurate in float32 down to KL ≈ 10⁻¹²; the gradient q − p = p·expm1(D − m − KL). β = 1 is the
  setting as stated (softmax of C itself); since C's entries are O(1/n), p is then within ~1% of
  uniform and the loss is MSE in disguise (CE ≈ ‖Z − C‖²/(2n²) up to the all-ones direction).
  β = n (``ce_scale`` = 100: logits of unit RMS, as if a_i, b_i had unit-RMS rather than unit-norm
  entries) is the regime where the softmax is genuinely non-linear; both are reported.

Optimisers: ``sgd`` (plain gradient descent; weight decay λ as an L2 term added to the gradient),
``adam`` (torch's Adam: L2 term added to the gradient before the moments) and ``adamw`` (torch's
AdamW: decoupled decay θ ← θ·(1 − lr·λ)); β₁ = 0.9, β₂ = 0.999, ε = 10⁻¹² (the CE gradients at
init are ~10⁻⁸, where torch's default ε = 10⁻⁸ would halve Adam's step and make it LR-like).
Seeds are batched: all runs of one (loss, β, optimiser) are one batch of [B, n, r] tensors.

Measures per run: the excess loss ℓ(t) relative to its initial value ℓ(0), and from it
- ``plateau_steps``: first step with ℓ(t) < ℓ(0)/2 (the issue's definition);
- ``onset_steps``: first step with ℓ(t) < 0.9·ℓ(0) (when the loss starts to move);
- ``sharpness`` = onset/plateau: near 1 for "plateau, then a sharp drop", small for a loss that
  falls from the first steps on;
- ``drops``: the number of separate sharp drops (see `low_rank_measures.count_drops`): 1 for one plateau and one
  transition, 2 for two plateaus;
and, for seed 0 at rank 2 with λ = 0, the overlap |⟨u_j, a_i⟩|² of each learned direction (u_j:
the j-th left singular vector of Z(t)) with each target direction a_i over time.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from umup_repro.analyses._common import reject_options, sibling
from umup_repro.analyses.low_rank_measures import run_measures
from umup_repro.core.atomic import write_table

N = 100
RANK_R = 100
RANKS = (1, 2, 10, 100)
SEEDS = 10
STEPS = 1000
SIGMA0 = 1e-3
WEIGHT_DECAYS = (0.0, 0.3, 1.0)
ADAM_EPS = 1e-12
ADAM_BETAS = (0.9, 0.999)
ALIGNMENT_RANK = 2

# One LR per (loss, ce_scale, optimiser), the same for every rank and weight decay. SGD on MSE:
# 0.01 (stable up to the largest singular values of the full-rank target, ≈ 4); SGD on CE with
# β = 1: 2n²·0.01, the same dynamics as MSE (CE ≈ MSE/(2n²) there); SGD on CE with β = n: 0.2
# (at 0.3 the full-rank runs oscillate at the edge of stability); Adam(W): 3·10⁻⁴ everywhere.
LR = {
    ("mse", 1.0, "sgd"): 0.01,
    ("mse", 1.0, "adam"): 3e-4,
    ("mse", 1.0, "adamw"): 3e-4,
    ("ce", 1.0, "sgd"): 2 * N * N * 0.01,
    ("ce", 1.0, "adam"): 3e-4,
    ("ce", float(N), "sgd"): 0.2,
    ("ce", float(N), "adam"): 3e-4,
}


@dataclass(frozen=True)
class Group:
    """Runs that share loss, CE scale, optimiser and LR: one batch over (rank, λ, seed)."""

    loss: str
    ce_scale: float
    optimizer: str
    lr: float
    weight_decays: tuple[float, ...]
    steps: int = STEPS


# Steps per group: each long enough for every plateau of its runs to end (the longest, SGD on
# MSE at λ = 1, ends near step 500; Adam's by step 150) and for the loss to fall well below it;
# CE with β = n keeps dropping in stages up to ~1000 steps.
GROUP_STEPS = {
    ("mse", "sgd"): 600,
    ("mse", "adam"): 300,
    ("mse", "adamw"): 300,
    ("ce1", "sgd"): 600,
    ("ce1", "adam"): 300,
    ("ceN", "sgd"): 1000,
    ("ceN", "adam"): 1000,
}


def default_groups(weight_decays=WEIGHT_DECAYS) -> list[Group]:
    """MSE: all three optimisers × all λ; CE (both scales): SGD and Adam at λ = 0 (AdamW at
    λ = 0 is Adam)."""
    groups = [
        Group("mse", 1.0, opt, LR[("mse", 1.0, opt)], tuple(weight_decays), GROUP_STEPS[("mse", opt)])
        for opt in ("sgd", "adam", "adamw")
    ]
    for scale, key in ((1.0, "ce1"), (float(N), "ceN")):
        groups += [
            Group("ce", scale, opt, LR[("ce", scale, opt)], (0.0,), GROUP_STEPS[(key, opt)]) for opt in ("sgd", "adam")
        ]
    return groups


def make_target(rank: int, seed: int, n: int = N) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(C, A, B) with C = A Bᵀ, A and B n×rank with random unit columns (float64)."""
    gen = torch.Generator().manual_seed(1_000_003 * rank + seed)
    A = torch.randn(n, rank, generator=gen, dtype=torch.float64)
    B = torch.randn(n, rank, generator=gen, dtype=torch.float64)
    A /= A.norm(dim=0, keepdim=True)
    B /= B.norm(dim=0, keepdim=True)
    return A @ B.T, A, B


def make_init(seed: int, n: int = N, r: int = RANK_R, sigma0: float = SIGMA0):
    gen = torch.Generator().manual_seed(7_777 + seed)
    X = torch.randn(n, r, generator=gen, dtype=torch.float64) * sigma0
    Y = torch.randn(n, r, generator=gen, dtype=torch.float64) * sigma0
    return X, Y


def loss_and_grad(
    Z: torch.Tensor, C: torch.Tensor, loss: str, ce_scale: float = 1.0, log_p: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(excess loss [B], dL/dZ [B, n, n]) for a batch of Z and targets C.

    `log_p` (optional) is log_softmax(β·vec C) precomputed, [B, n²].
    """
    if loss == "mse":
        R = Z - C
        return (R * R).sum((1, 2)), 2 * R
    if loss == "ce":
        b = Z.shape[0]
        if log_p is None:
            log_p = torch.log_softmax(ce_scale * C.reshape(b, -1), -1)
        p = log_p.exp()
        D = Z.reshape(b, -1) - ce_scale * C.reshape(b, -1)
        m = (p * D).sum(-1, keepdim=True)
        kl = torch.log1p((p * torch.expm1(D - m)).sum(-1, keepdim=True)).clamp_min(0)
        grad = p * torch.expm1(D - m - kl)  # = q − p
        return kl.squeeze(-1), grad.reshape(Z.shape)
    raise ValueError(f"unknown loss {loss!r}")


def ce_reference(Z: torch.Tensor, C: torch.Tensor, ce_scale: float) -> torch.Tensor:
    """The plain definition, for the tests: −Σ p log softmax(Z) − H(p) (float64 log-sum-exp)."""
    b = Z.shape[0]
    log_p = torch.log_softmax(ce_scale * C.reshape(b, -1).double(), -1)
    log_q = Z.reshape(b, -1).double() - torch.logsumexp(Z.reshape(b, -1).double(), -1, True)
    return -(log_p.exp() * log_q).sum(-1) + (log_p.exp() * log_p).sum(-1)


def log_steps(steps: int, per_decade: int = 24, linear: int = 200) -> np.ndarray:
    """The steps a curve is recorded at: 0, `per_decade` a decade evenly in log from 1 to
    `steps`, and `linear` evenly spaced ones (for plots on either axis), deduplicated."""
    grid = np.round(np.logspace(0, math.log10(steps), per_decade * max(1, round(math.log10(steps))) + 1)).astype(int)
    grid = np.concatenate([[0], grid, np.round(np.linspace(0, steps, linear + 1)).astype(int)])
    return np.unique(grid[grid <= steps])


def train_group(
    group: Group,
    ranks=RANKS,
    seeds: int = SEEDS,
    steps: int | None = None,
    r: int = RANK_R,
    sigma0: float = SIGMA0,
    n: int = N,
    alignment_rank: int | None = ALIGNMENT_RANK,
    record_steps=None,
):
    """Train every (rank, λ, seed) of `group` as one batch for `steps` (default group.steps).

    Returns (runs, excess, snapshots): `runs` a DataFrame of the batch's rows (rank,
    weight_decay, seed), `excess` an array [steps + 1, B] of the excess loss after each step
    (row 0: at init), `snapshots` {step: (Z of the tracked run, its A)} for seed 0, rank
    `alignment_rank`, λ = 0 (empty if that run is not in the group).
    """
    steps = group.steps if steps is None else steps
    runs = pd.DataFrame(
        [(k, wd, s) for k in ranks for wd in group.weight_decays for s in range(seeds)],
        columns=["rank", "weight_decay", "seed"],
    )
    targets = {(k, s): make_target(k, s, n) for k in ranks for s in range(seeds)}
    inits = {s: make_init(s, n, r, sigma0) for s in range(seeds)}
    C = torch.stack([targets[(k, s)][0] for k, s in zip(runs["rank"], runs["seed"])]).float()
    X = torch.stack([inits[s][0] for s in runs["seed"]]).float()
    Y = torch.stack([inits[s][1] for s in runs["seed"]]).float()
    wd = torch.tensor(runs["weight_decay"].to_numpy(), dtype=torch.float32).view(-1, 1, 1)
    use_wd = bool((wd != 0).any())
    log_p = torch.log_softmax(group.ce_scale * C.reshape(len(runs), -1), -1) if group.loss == "ce" else None
    track = runs.index[(runs["rank"] == alignment_rank) & (runs["weight_decay"] == 0) & (runs["seed"] == 0)]
    track = int(track[0]) if len(track) else None
    record = set(log_steps(steps) if record_steps is None else record_steps)
    snapshots = {}

    lr = group.lr
    b1, b2 = ADAM_BETAS
    if group.optimizer not in ("sgd", "adam", "adamw"):
        raise ValueError(f"unknown optimizer {group.optimizer!r}")
    adam = group.optimizer != "sgd"
    l2 = use_wd and group.optimizer in ("sgd", "adam")  # L2 term in the gradient
    if adam:
        mX, mY, vX, vY = (torch.zeros_like(X) for _ in range(4))
    excess = torch.empty(steps + 1, len(runs))
    # In-place updates, few kernels per step: elementwise passes over [B, n, r] cost as much
    # as the three batched matmuls here.
    for t in range(steps + 1):
        Z = torch.bmm(X, Y.transpose(1, 2))
        ell, G = loss_and_grad(Z, C, group.loss, group.ce_scale, log_p)
        excess[t] = ell
        if track is not None and t in record:
            snapshots[t] = Z[track].double().clone()
        if t == steps:
            break
        gX = torch.bmm(G, Y)
        gY = torch.bmm(G.transpose(1, 2), X)
        if not adam:  # θ ← θ − lr·(g + λθ) = θ·(1 − lr·λ) − lr·g
            if l2:
                X.mul_(1 - lr * wd)
                Y.mul_(1 - lr * wd)
            X.add_(gX, alpha=-lr)
            Y.add_(gY, alpha=-lr)
            continue
        if l2:
            gX.addcmul_(wd, X)
            gY.addcmul_(wd, Y)
        elif use_wd:  # AdamW: decoupled decay before the Adam step (as torch.optim.AdamW)
            X.mul_(1 - lr * wd)
            Y.mul_(1 - lr * wd)
        bc1 = 1 - b1 ** (t + 1)
        sbc2 = math.sqrt(1 - b2 ** (t + 1))
        # lr·m̂/(√v̂ + ε) = (lr·√bc2/bc1)·m/(√v + ε·√bc2)
        for P, g, m, v in ((X, gX, mX, vX), (Y, gY, mY, vY)):
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            P.addcdiv_(m, v.sqrt().add_(ADAM_EPS * sbc2), value=-lr * sbc2 / bc1)
    A = targets[(alignment_rank, 0)][1] if track is not None else None
    return runs, excess.double().numpy(), {t: (z, A) for t, z in snapshots.items()}


def _alignment_rows(group: Group, snapshots: dict) -> list[dict]:
    rows = []
    for t, (Z, A) in sorted(snapshots.items()):
        U, S, _ = torch.linalg.svd(Z)
        k = A.shape[1]
        overlap = (U[:, :k].T @ A) ** 2  # [learned j, target i]
        for j in range(k):
            for i in range(k):
                rows.append(
                    {
                        "loss": group.loss,
                        "ce_scale": group.ce_scale,
                        "optimizer": group.optimizer,
                        "lr": group.lr,
                        "rank": k,
                        "seed": 0,
                        "step": t,
                        "learned": j + 1,
                        "target": i + 1,
                        "overlap": float(overlap[j, i]),
                        "singular_value": float(S[j]),
                    }
                )
    return rows


def compute(
    groups=None,
    ranks=RANKS,
    seeds: int = SEEDS,
    steps: int | None = None,
    r: int = RANK_R,
    sigma0: float = SIGMA0,
    alignment_rank: int | None = ALIGNMENT_RANK,
):
    """Run every group; returns (curves, plateaus, alignment) DataFrames.

    curves: per setting and recorded step, median and 10/90% quantiles over seeds of the
    relative excess ℓ(t)/ℓ(0) (and the median absolute excess); `steps` overrides every
    group's own step count. plateaus: per setting, median
    and quartiles over seeds of the measures in `run_measures`. alignment: see module docstring.
    """
    groups = default_groups() if groups is None else groups
    torch.set_flush_denormal(True)  # tiny softmax tails would otherwise crawl
    curves, plateaus, alignment = [], [], []
    for group in groups:
        runs, excess, snapshots = train_group(group, ranks, seeds, steps, r, sigma0, alignment_rank=alignment_rank)
        rec = log_steps(excess.shape[0] - 1)
        rel = excess / excess[0]
        measures = pd.concat([runs, run_measures(excess)], axis=1)
        setting = {"loss": group.loss, "ce_scale": group.ce_scale, "optimizer": group.optimizer, "lr": group.lr}
        for (k, wd), idx in runs.groupby(["rank", "weight_decay"], sort=False).groups.items():
            idx = np.asarray(idx)
            sub = rel[rec][:, idx]
            q10, med, q90 = np.quantile(sub, [0.1, 0.5, 0.9], axis=1)
            abs_med = np.median(excess[rec][:, idx], axis=1)
            for t, a, b, c, e in zip(rec, med, q10, q90, abs_med):
                curves.append(
                    {
                        **setting,
                        "weight_decay": wd,
                        "rank": k,
                        "step": int(t),
                        "excess_rel_median": a,
                        "excess_rel_q10": b,
                        "excess_rel_q90": c,
                        "excess_median": e,
                    }
                )
            m = measures.loc[idx]
            row = {
                **setting,
                "weight_decay": wd,
                "rank": k,
                "seeds": len(idx),
                "reached_half": float(m["plateau_steps"].notna().mean()),
            }
            for col in ("plateau_steps", "onset_steps", "sharpness", "drops", "final_excess_rel"):
                row[f"{col}_median"] = float(m[col].median())
                if col in ("plateau_steps", "drops"):
                    row[f"{col}_q25"] = float(m[col].quantile(0.25))
                    row[f"{col}_q75"] = float(m[col].quantile(0.75))
            row["initial_excess_median"] = float(m["initial_excess"].median())
            plateaus.append(row)
        alignment += _alignment_rows(group, snapshots)
    return pd.DataFrame(curves), pd.DataFrame(plateaus), pd.DataFrame(alignment)


def run(
    table_path, figure_path, plateau_table_path=None, alignment_table_path=None, alignment_figure_path=None, **kwargs
):
    from umup_repro.analyses.low_rank_plots import plot, plot_alignment

    curves, plateaus, alignment = compute(**kwargs)
    write_table(curves, table_path)
    if plateau_table_path is not None:
        write_table(plateaus, plateau_table_path)
    if alignment_table_path is not None:
        write_table(alignment, alignment_table_path)
    plot(curves, figure_path, plateaus, n=N, alignment_rank=ALIGNMENT_RANK)
    if alignment_figure_path is not None:
        plot_alignment(alignment, alignment_figure_path, n=N, alignment_rank=ALIGNMENT_RANK)
    return curves, plateaus, alignment


def main(args: argparse.Namespace) -> int:
    """`umup-repro analysis low_rank`: curves, plateau and alignment tables, two figures."""
    reject_options(args, ("slopes_table",), "low_rank")
    run(
        args.table,
        args.figure,
        plateau_table_path=args.plateau_table or sibling(args.table, "_plateaus"),
        alignment_table_path=args.alignment_table or sibling(args.table, "_alignment"),
        alignment_figure_path=args.alignment_figure or sibling(args.figure, "_alignment"),
    )
    return 0
