"""The authors' notes as analyses (instructive example, embedding update, low-rank toy) and the
coordinate check: each computes its own table from the model, then draws it with the figures'
style.

May import: `umup_repro.core`, `umup_repro.model`, `umup_repro.data`, `umup_repro.results`
(tables, slopes), `umup_repro.figures` (style, saving).
"""
