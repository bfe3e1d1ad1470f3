# Staged searches (umup_repro/sweeps/search_stage.py) and pairwise transfer error (umup_repro/results/transfer_error.py).
#
# A staged sweep's later stages depend on results: the checkpoint `search_stage` decides stage
# `lr` from its runs (results/search/<sweep>/lr.json), which adds stage `hp`'s cells to the DAG;
# deciding stage `hp` adds the `combined` run. `snakemake -n` before any run shows stage `lr`
# only. Cell ids stay hashes of resolved configs: a later-stage cell is an ordinary train_cell job.
# The staged sweeps (STAGED_SWEEPS) and their cells given the decisions are in common.smk.
#
# An extended sweep (`extend`, umup_repro/sweeps/extend.py) grows the same way: the checkpoint
# `extend_grid` decides pass k from every run known after passes 1 … k−1
# (results/search/<sweep>/extend-<k>.json) and adds grid points beyond edge optima; the sweep's
# table waits for the pass that adds nothing, or pass `extend.max`.


PAIR_SWEEPS = [s for s in CELLS if config["sweeps"][s].get("pairs")]


checkpoint search_stage:
    input:
        lambda w: stage_summaries(w.sweep, w.stage),
    output:
        "results/search/{sweep}/{stage}.json",
    wildcard_constraints:
        stage="|".join(search_stage.STAGES),
    log:
        "results/logs/search/{sweep}_{stage}.log",
    localrule: True  # reads a few summaries: on a cluster it runs in the driver
    params:
        preset=config["preset"],
    conda:
        "../envs/umup-repro.yaml"
    shell:
        "umup-repro search-stage --preset {params.preset:q} --sweep {wildcards.sweep} --stage {wildcards.stage}"
        " --runs results/runs --search-dir results/search > {log} 2>&1"


checkpoint extend_grid:
    input:
        lambda w: pass_summaries(w.sweep, int(w.k)),
    output:
        "results/search/{sweep}/extend-{k}.json",
    wildcard_constraints:
        k="[1-9][0-9]*",
    log:
        "results/logs/search/{sweep}_extend-{k}.log",
    localrule: True  # reads a sweep's summaries: on a cluster it runs in the driver
    params:
        preset=config["preset"],
    conda:
        "../envs/umup-repro.yaml"
    shell:
        "umup-repro extend-grid --preset {params.preset:q} --sweep {wildcards.sweep} --pass {wildcards.k}"
        " --runs results/runs --search-dir results/search > {log} 2>&1"


ALL_TARGETS.extend(f"results/tables/{s}.csv" for s in STAGED_SWEEPS + EXTENDED_SWEEPS)

if PAIR_SWEEPS:

    rule transfer_error_table:
        input:
            expand("results/tables/{sweep}.csv", sweep=PAIR_SWEEPS),
        output:
            "results/tables/transfer_error.csv",
        log:
            "results/logs/aggregate/transfer_error.log",
        localrule: True
        params:
            preset=config["preset"],
            sweeps=" ".join(f"--sweep {s}" for s in PAIR_SWEEPS),
        conda:
            "../envs/umup-repro.yaml"
        shell:
            "umup-repro transfer-error --preset {params.preset:q} {params.sweeps} --tables results/tables"
            " --out {output} > {log} 2>&1"

    ALL_TARGETS.append("results/tables/transfer_error.csv")
