"""Tables → figures of the replication: a module per family of figures, one shared style.

Where each figure is drawn:

- `lr_transfer`: loss vs LR across width / depth / batch size / steps (`transfer_width`,
  `transfer_depth`, `transfer_batch`, `transfer_steps`) and the embedding LR rule (`embedding_lr`),
- `hyperparameters`: transfer of the other HPs across width (`hp_transfer`),
- `search`: random vs staged search (`search_strategies`) and the pairwise transfer error
  (`transfer_error`, read from `results/tables/transfer_error.csv`),
- `rms`: per-tensor RMS at initialisation, during and at the end of training (`rms_init`,
  `rms_training`, `rms_end`),
- `fp8`: training curves with and without FP8 (`fp8_training`),
- `coord_check_plot`: activation RMS vs width after each Adam step (`coord_check`),
- `stability_fixes`: paper Fig. 2, μP's LR transfer in TP-V's setting, standard Llama and Llama
  with the two stability fixes (`stability_fixes`);

with what they share: `tables` (reading the aggregated tables under `results/tables/`, layout in
docs/design.md), `style` (labels, colours, log2 axes, markers, saving PDF + PNG atomically),
`loss_lines` (the loss-vs-value panel the transfer figures share), and `registry` (the figure
names, the tables each reads, and `plot(name, tables, sweeps, out)`: what `umup-repro plot NAME`
and the Snakemake rules call).

Each figure writes `<out>.pdf` plus the PNG next to it and returns a DataFrame of what it
plotted (the optimum of each line, the best loss so far, the RMS values drawn, ...) so tests,
logs and `results/tables/figures/<name>.csv` can check the figure against its tables.

Importing this package loads matplotlib, seaborn and pandas; `umup_repro.cli` imports it only
when a figure is drawn.
"""

from __future__ import annotations

from umup_repro.figures.coord_check_plot import coord_check
from umup_repro.figures.fp8 import fp8_training
from umup_repro.figures.hyperparameters import hp_transfer
from umup_repro.figures.lr_transfer import (TRANSFER_AXES, embedding_lr, transfer, transfer_batch, transfer_depth,
                                            transfer_steps, transfer_width)
from umup_repro.figures.plot import FIGURES, main, plot, tables_needed
from umup_repro.figures.rms import rms_end, rms_init, rms_training
from umup_repro.figures.search import search_curves, search_strategies, transfer_error
from umup_repro.figures.stability_fixes import stability_fixes
from umup_repro.results.tables import load_coord_check, load_table, prepare, tensor_type

__all__ = [
    "FIGURES",
    "TRANSFER_AXES",
    "coord_check",
    "embedding_lr",
    "fp8_training",
    "hp_transfer",
    "load_coord_check",
    "load_table",
    "main",
    "plot",
    "prepare",
    "rms_end",
    "rms_init",
    "rms_training",
    "search_curves",
    "search_strategies",
    "stability_fixes",
    "tables_needed",
    "tensor_type",
    "transfer",
    "transfer_batch",
    "transfer_depth",
    "transfer_error",
    "transfer_steps",
    "transfer_width",
]
