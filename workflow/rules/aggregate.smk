# Run folders -> tables. A sweep's tables depend on exactly its cells' summaries, so a figure's
# DAG contains only the cells of the sweeps it plots.

from umup_repro.results import seed_noise

# Reading CSVs is cheap: on a cluster these run where Snakemake runs, not as jobs.
localrules:
    aggregate_sweep,
    transfer_summary,


TRANSFER_SWEEPS = [s for s in CELLS if "transfer" in config["sweeps"][s]]
# Static sweeps with seed replicates (e.g. tiny's fp8 pair): the transfer summary pools their seed
# noise for the optima's intervals (umup_repro/results/seed_noise.py, tables_noise).
NOISE_SWEEPS = [
    s
    for s in CELLS
    if s not in TRANSFER_SWEEPS and s not in STAGED_SWEEPS and seed_noise.replicated(CELLS[s].values())
]


rule aggregate_sweep:
    input:
        lambda w: sweep_summaries(w.sweep),  # search.smk: a staged sweep's every stage
    output:
        runs="results/tables/{sweep}.csv",
        metrics="results/tables/metrics/{sweep}.csv",
        rms="results/tables/rms/{sweep}.csv",
    log:
        "results/logs/aggregate/{sweep}.log",
    params:
        preset=config["preset"],
    conda:
        "../envs/umup-repro.yaml"
    shell:
        "umup-repro aggregate --preset {params.preset:q} --sweep {wildcards.sweep}"
        " --runs results/runs --tables results/tables > {log} 2>&1"


rule transfer_summary:
    input:
        expand("results/tables/{sweep}.csv", sweep=TRANSFER_SWEEPS + NOISE_SWEEPS),
    output:
        "results/tables/transfer_summary.csv",
    log:
        "results/logs/aggregate/transfer_summary.log",
    params:
        preset=config["preset"],
        sweeps=" ".join(f"--sweep {s}" for s in TRANSFER_SWEEPS + NOISE_SWEEPS),
    conda:
        "../envs/umup-repro.yaml"
    shell:
        "umup-repro aggregate --preset {params.preset:q} {params.sweeps} --tables results/tables"
        " --transfer-summary {output} > {log} 2>&1"


ALL_TARGETS.append("results/tables/transfer_summary.csv")
