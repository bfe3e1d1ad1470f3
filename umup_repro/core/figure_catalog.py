"""The figures of the replication, listed once: for each its name, default sweeps, the tables it
reads, the function that draws it ("module:function") and its caption in `snakemake --report`.

Every list of figures is read from here: `umup-repro plot` and its choices, the preset checks
(umup_repro/sweeps/preset_checks.py), the Snakemake rules (workflow/rules/figures.smk,
analyses.smk, claims.smk) and the report's captions. It lives in `core`, the lowest layer, because
the preset checks and the Snakefile read it, and it imports nothing: the DAG loads it on every
evaluation, so the drawing functions (matplotlib) are named here and imported only to draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Where each kind of table lies under the tables folder; {sweep} is each sweep of the figure
# (coord_check: each parametrization). A figure's table that is not a kind is a fixed path.
TABLE_PATHS = {
    "main": "{sweep}.csv",
    "rms": "rms/{sweep}.csv",
    "metrics": "metrics/{sweep}.csv",
    "transfer_error": "transfer_error.csv",
    "coord_check": "coord_check/{sweep}/coord_check.csv",
}


@dataclass(frozen=True)
class Figure:
    name: str
    draw: str  # "module:function"; `plot` calls it with the tables below, in order, then the output path
    caption: str
    sweeps: tuple[str, ...] = ()  # what `umup-repro plot NAME` reads without --sweeps
    tables: tuple[str, ...] = ("main",)  # kinds of TABLE_PATHS, or paths relative to the tables folder
    command: str = "plot"  # the `umup-repro` command that writes it: plot, claims or `analysis NAME`


_F = "umup_repro.figures."
_A = "umup_repro.analyses."
_CATALOG = (
    Figure(
        "transfer_width",
        _F + "lr_transfer:transfer_width",
        "Final validation loss vs learning rate η across model width, a panel per parametrization (SP, μP,"
        " u-μP); optima and diverged runs marked. μP and u-μP keep their optimum across width, SP does not"
        " (the paper's Fig. 1b/2).",
        ("lr_width",),
    ),
    Figure(
        "transfer_depth",
        _F + "lr_transfer:transfer_depth",
        "Final validation loss vs learning rate across depth (number of transformer blocks), a panel per"
        " parametrization.",
        ("lr_depth",),
    ),
    Figure(
        "transfer_batch",
        _F + "lr_transfer:transfer_batch",
        "Final validation loss vs learning rate across batch size, a panel per parametrization.",
        ("lr_batch",),
    ),
    Figure(
        "transfer_steps",
        _F + "lr_transfer:transfer_steps",
        "Final validation loss vs learning rate across the number of training steps, a panel per parametrization.",
        ("lr_steps",),
    ),
    Figure(
        "hp_transfer",
        _F + "hyperparameters:hp_transfer",
        "Transfer of u-μP's other hyperparameters across width, each varied alone around the base point.",
        ("hp_width",),
    ),
    Figure(
        "search_strategies",
        _F + "search:search_strategies",
        "Best loss vs number of runs, random search vs independent search at one width (the paper's Fig. 1a).",
        ("search_random", "search_staged"),
    ),
    Figure(
        "transfer_error",
        _F + "search:transfer_error",
        "Pairwise transfer error of each parametrization's hyperparameters (the paper's Fig. 4, Alg. 1): the"
        " loss paid at the best value of one HP when the other was tuned at a different value of the first;"
        " mean over pairs in each panel's title.",
        ("hp_pairs",),
        ("transfer_error",),
    ),
    Figure(
        "embedding_lr",
        _F + "lr_transfer:embedding_lr",
        "u-μP with the embedding LR rule c_emb = 1/√fan_out vs c_emb = 1, loss vs LR across width.",
        ("embedding_lr",),
    ),
    Figure(
        "stability_fixes",
        _F + "stability_fixes:stability_fixes",
        "μP's LR transfer across width in three settings (TP-V's, a standard Llama recipe, Llama with the two"
        " stability fixes: no norm gains, independent weight decay), u-μP alongside where the sweep has it"
        " (the paper's Fig. 2).",
        ("lr_stability",),
    ),
    Figure(
        "rms_init",
        _F + "rms:rms_init",
        "RMS of activations, weights and gradients per tensor at initialisation; the E4M3/E5M2 ranges marked.",
        ("rms",),
        ("rms", "main"),
    ),
    Figure(
        "rms_training",
        _F + "rms:rms_training",
        "RMS of the FFN and decoder tensors over training (the paper's Fig. 13).",
        ("rms",),
        ("rms", "main"),
    ),
    Figure(
        "rms_end",
        _F + "rms:rms_end",
        "End-of-training RMS per tensor vs LR, width, depth, steps and batch size (the paper's Fig. 14).",
        ("lr_width", "lr_depth", "lr_steps", "lr_batch"),
        ("rms", "main"),
    ),
    Figure(
        "fp8_training",
        _F + "fp8:fp8_training",
        "Training curves with and without FP8 matmuls, u-μP and μP (the paper's Fig. 1c).",
        ("fp8",),
        ("metrics", "main"),
    ),
    Figure(
        "large_scale",
        _F + "large_scale:large_scale",
        "Training loss against tokens at large scale, a panel per model size, a line per scheme: SP-BF16,"
        " u-μP-BF16, u-μP-FP8 (the paper's Fig. 6 setting).",
        ("large_scale",),
        ("metrics", "main"),
    ),
    Figure(
        "coord_check",
        _F + "coord_check_plot:coord_check",
        "Tensor Programs V coordinate check, activation RMS vs width after each Adam step, per parametrization.",
        (),
        ("coord_check",),
    ),
    # the authors' notes (umup_repro/analyses/): each computes its own tables
    Figure(
        "instructive_example",
        _A + "instructive_example:plot",
        "The authors' instructive example as an analysis; log-log slopes in"
        " results/tables/instructive_example_slopes.csv.",
        tables=(),
        command="analysis instructive_example",
    ),
    Figure(
        "embedding_update",
        _A + "embedding_update:plot",
        "The authors' embedding-update note: how the embedding's update scales with width under each LR rule.",
        tables=(),
        command="analysis embedding_update",
    ),
    Figure(
        "low_rank",
        _A + "low_rank_plots:plot",
        "The authors' low-rank note: plateau lengths of low-rank training.",
        tables=(),
        command="analysis low_rank",
    ),
    Figure(
        "low_rank_alignment",
        _A + "low_rank_plots:plot_alignment",
        "The authors' low-rank note: overlap of the update directions with the low-rank subspace.",
        tables=(),
        command="analysis low_rank",
    ),
    # the scorecard (umup_repro/results/claims.py): the tables a claim may read
    Figure(
        "claims",
        _F + "claims:draw",
        "The replication scorecard: each claim of the paper, the number this run measured for it, the stated"
        " threshold (with seed noise where there are replicates) and the verdict (holds, fails, not"
        " measured); the page figures/claims.md has the table.",
        tables=(
            "transfer_summary.csv",
            "lr_width.csv",
            "fp8.csv",
            "search_random.csv",
            "search_staged.csv",
            "transfer_error.csv",
            "figures/rms_init.csv",
            "figures/rms_end.csv",
        ),
        command="claims",
    ),
)
FIGURES: dict[str, Figure] = {f.name: f for f in _CATALOG}

# What `umup-repro plot` draws (and a preset's `figures:` may name); the analyses (`umup-repro analysis NAME`).
PLOTTED = tuple(f.name for f in _CATALOG if f.command == "plot")
ANALYSES = tuple(dict.fromkeys(f.command.split()[1] for f in _CATALOG if f.command.startswith("analysis ")))
ANALYSIS_FIGURES = tuple(f.name for f in _CATALOG if f.command.startswith("analysis "))


def tables_needed(name: str, sweeps: Sequence[str] | None = None) -> list[str]:
    """Paths (relative to the tables folder) figure `name` reads for `sweeps` (default: its own):
    what its Snakemake rule depends on."""
    figure = FIGURES[name]
    sweeps = figure.sweeps if sweeps is None else sweeps
    paths = []
    for table in figure.tables:
        path = TABLE_PATHS.get(table, table)
        paths += [path.format(sweep=s) for s in sweeps] if "{sweep}" in path else [path]
    return paths


def caption(name: str) -> str:
    return FIGURES[name].caption


__all__ = ["ANALYSES", "ANALYSIS_FIGURES", "FIGURES", "PLOTTED", "TABLE_PATHS", "Figure", "caption", "tables_needed"]
