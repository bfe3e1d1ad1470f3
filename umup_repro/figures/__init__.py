"""Tables → figures of the replication: a module per family of figures, one shared style.

Which module draws which figure, the tables each reads and its caption are in the catalog,
umup_repro/core/figure_catalog.py; `plot` draws one by name (`umup-repro plot NAME`, the
Snakemake figure rules). Shared: `style` (labels, colours, log2 axes, markers, saving PDF + PNG
atomically) and `loss_lines` (the loss-vs-value panel the transfer figures share); the tables are
read by umup_repro/results/tables.py.

Each figure writes `<out>.pdf` plus the PNG next to it and returns a DataFrame of what it
plotted (the optimum of each line, the best loss so far, the RMS values drawn, ...) so tests,
logs and `results/tables/figures/<name>.csv` can check the figure against its tables.

This package init imports nothing: import the submodule you need (each loads matplotlib).
May import: `umup_repro.core`, `umup_repro.results` (tables, claims).
"""
