"""umup-repro workflow (thin): loads the preset, expands its sweeps, includes workflow/rules/*.smk.

  snakemake --cores all                                  the whole preset (config/config.yaml: tiny)
  snakemake --cores all --config preset=smoke            another preset
  snakemake --cores all figures/transfer_width.pdf       one figure and only the cells it needs
  umup-repro cells --preset tiny                         what a preset expands to, before running

Each included .smk appends the files `all` should build to ALL_TARGETS. A rule file uses only
names defined above it: here or in a file included before it (tests/test_snakemake_conventions.py).
"""

import os

from snakemake.utils import min_version, validate

from umup_repro.sweeps import grid, presets

min_version("9.0")

configfile: os.path.join(workflow.basedir, "config", "config.yaml")

# config/config.yaml (+ --config) selects the preset; the preset's contents join the config, which
# is then checked against the JSON schema (errors name the field and what is allowed).
config.update(presets.load_preset(config))
validate(config, "workflow/schemas/config.schema.yaml")
CELLS = {sweep: {c.id: c for c in cells} for sweep, cells in grid.expand_preset(config).items()}

ALL_TARGETS = []

include: "workflow/rules/common.smk"  # first: imports, shared state and the input functions
include: "workflow/rules/sweeps.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/analyses.smk"
include: "workflow/rules/claims.smk"  # last: it depends on tables the rules above make


rule all:
    default_target: True
    input:
        ALL_TARGETS,
