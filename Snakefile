"""umup-repro workflow (thin): loads the preset, expands its sweeps, includes workflow/rules/*.smk.

  snakemake --cores all                                  the whole preset (config/config.yaml: tiny)
  snakemake --cores all --config preset=smoke            another preset
  snakemake --cores all figures/transfer_width.pdf       one figure and only the cells it needs
  umup-repro cells --preset tiny                         what a preset expands to, before running

Each included .smk appends the files `all` should build to ALL_TARGETS.
"""

import os
from pathlib import Path

import yaml

from umup_repro.sweeps import grid, presets
from snakemake.utils import min_version, validate

min_version("9.0")

configfile: os.path.join(workflow.basedir, "config", "config.yaml")

# config/config.yaml (+ --config) selects the preset; the preset's contents join the config, which
# is then checked against the JSON schema (errors name the field and what is allowed).
config.update(presets.load_preset(config))
validate(config, "workflow/schemas/config.schema.yaml")
# optional experiment loggers of every cell (`loggers: [tensorboard]` in a preset or --config)
if config.get("loggers"):
    os.environ.update(UMUP_LOGGERS=",".join(config["loggers"]))  # read by every `umup-repro train`
CELLS = {sweep: {c.id: c for c in cells} for sweep, cells in grid.expand_preset(config).items()}

ALL_TARGETS = []

include: "workflow/rules/common.smk"
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
