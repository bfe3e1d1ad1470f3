"""umup-repro workflow (thin): the rules live in workflow/rules/*.smk.

Each included .smk appends the files `all` should build to ALL_TARGETS.
  snakemake --cores 2                               everything
  snakemake --cores 2 figures/instructive_example.pdf   one figure and what it needs
"""

ALL_TARGETS = []

include: "workflow/rules/analyses.smk"


rule all:
    default_target: True
    input:
        ALL_TARGETS,
