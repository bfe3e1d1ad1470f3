"""Tensor Programs V coordinate check: activation RMS against width over a few Adam steps.

Under μP and u-μP every activation's RMS is flat in width once training moves it; under SP the
activations and output logits grow with width. One batch of real text (the default corpus),
the same batches and seed at every width, constant LR, no warmup.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from umup_repro.core import parametrizations
from umup_repro.core.atomic import write_table
from umup_repro.core.config import resolve_config
from umup_repro.figures.style import save_figure
from umup_repro.model.decoder import build_model
from umup_repro.model.optim import build_optimizer
from umup_repro.model.rms import grad_rms, record_activations, rms
from umup_repro.results.tables import width_slopes

# The check's constant LR per parametrization is its catalog entry's `coord_check_lr`
# (umup_repro/core/parametrizations.py, with the reasons for each value).


def run_coord_check(
    parametrization: str,
    widths: list[int],
    *,
    depth: int = 2,
    steps: int = 4,
    lr: float | None = None,
    batch_size: int = 8,
    seq_len: int = 128,
    seed: int = 0,
    base: dict | None = None,
) -> pd.DataFrame:
    """Long-format RMS rows (parametrization, width, step, tensor, kind, rms) for each width.

    As in TP-V, Adam trains on one fixed batch of real text and the activations are measured in
    that batch's forward pass after `step` updates (kind `activation`), together with the RMS of
    their change since initialisation (kind `activation_delta`: the update's contribution, which
    must neither blow up nor vanish with width). Measuring on the batch the updates came from is
    what exposes the alignment between update and input that makes SP blow up. `base` is an
    optional partial config (e.g. a smaller vocabulary) merged under the check's settings.
    """
    from umup_repro import data

    lr = parametrizations.get(parametrization).check_lr if lr is None else lr
    rows = []
    for width in widths:
        config = resolve_config(
            base or {},
            parametrization=parametrization,
            **{
                "model.width": width,
                "model.depth": depth,
                "model.seq_len": seq_len,
                "train.lr": lr,
                "train.batch_size": batch_size,
                "train.seed": seed,
            },
        )
        tokens = data.token_arrays(config)["train"]
        batch = data.train_batch(tokens, seed=seed, step=0, batch_size=batch_size, seq_len=seq_len)
        torch.manual_seed(seed)
        model = build_model(config)
        optimizer = build_optimizer(model, config)
        initial = None

        def add(step, tensor, kind, value, width=width):
            rows.append(
                {
                    "parametrization": parametrization,
                    "width": width,
                    "step": step,
                    "tensor": tensor,
                    "kind": kind,
                    "rms": value,
                }
            )

        for step in range(steps + 1):
            optimizer.zero_grad(set_to_none=True)
            with record_activations(model, keep_tensors=True) as acts:
                loss = model.loss(batch)
            loss.backward()
            initial = initial or acts
            for name, value in acts.items():
                add(step, name, "activation", rms(value))
                if step:
                    add(step, name, "activation_delta", rms(value - initial[name]))
            for name, value in grad_rms(model).items():
                add(step, name, "grad", value)
            add(step, "loss", "loss", loss.item())
            if step < steps:
                optimizer.step()
    return pd.DataFrame(rows, columns=["parametrization", "width", "step", "tensor", "kind", "rms"])


def tensor_type(name: str) -> str:
    """`blocks.3.attn.q_proj` → `attn.q_proj`: what the figure colours by."""
    parts = name.split(".")
    return ".".join(parts[2:]) if parts[0] == "blocks" else name


def plot_coord_check(table: pd.DataFrame, path: Path) -> None:
    """One panel per step: activation RMS vs width, a line per tensor, coloured by its type."""
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    acts = table[table["kind"] == "activation"].copy()
    acts["type"] = acts["tensor"].map(tensor_type)
    grid = sns.relplot(
        data=acts,
        x="width",
        y="rms",
        hue="type",
        units="tensor",
        estimator=None,
        col="step",
        kind="line",
        marker="o",
        height=3.0,
        aspect=0.9,
        facet_kws={"sharey": True},
    )
    grid.set(yscale="log")
    for ax in grid.axes.flat:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(acts["width"].unique()))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.tick_params(axis="x", labelrotation=45)
    grid.set_axis_labels("width", "activation RMS")
    grid.figure.suptitle(f"Coordinate check: {table['parametrization'].iloc[0]}", y=1.03)
    save_figure(grid.figure, path.with_suffix(".pdf"), dpi=120)


def main(args: argparse.Namespace) -> int:
    widths = [int(w) for w in str(args.widths).split(",") if w]
    table = run_coord_check(
        args.parametrization,
        widths,
        depth=args.depth,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        seed=args.seed,
    )
    out = Path(args.out)
    write_table(table, out / "coord_check.csv")
    slopes = width_slopes(table)
    write_table(slopes, out / "coord_check_slopes.csv")
    plot_coord_check(table, out / "coord_check")
    last = slopes[slopes["step"] == args.steps]
    worst = last.loc[last["slope"].abs().idxmax()]
    logits = last[last["tensor"] == "readout"]["slope"].iloc[0]
    print(
        f"{args.parametrization}: widths {widths}, step {args.steps}: logits slope {logits:+.3f}, "
        f"largest |slope| {worst['slope']:+.3f} ({worst['tensor']}); wrote {out}/coord_check.csv, "
        f"coord_check.pdf/png, coord_check_slopes.csv"
    )
    return 0


__all__ = ["run_coord_check", "plot_coord_check", "main"]
