# Tables -> figures: one rule per figure of the preset's figure map (config["figures"]:
# {figure: [sweeps]}), each depending only on the tables it plots, so
# `snakemake figures/transfer_width.pdf` builds that figure and only the cells of its sweeps.
# A figure whose sweeps are not all in the preset is skipped. `coord_check` reads no sweep: its
# tables come from `umup-repro coord-check` (one job per parametrization, CPU-sized settings).
#
# Every figure rule runs `umup-repro plot NAME` (umup_repro/figures/plot.py) and writes
# figures/NAME.{pdf,png} plus what it plotted, results/tables/figures/NAME.csv. The tables each
# figure reads and its caption come from the figure catalog (umup_repro/core/figure_catalog.py).

from umup_repro.core import parametrizations

# Coordinate check at CPU size (the preset may override any key under `coord_check:`).
COORD_CHECK = {
    # the catalog's parametrizations that force no FP8 (u-μP-FP8 has u-μP's scales)
    "parametrizations": [p.name for p in parametrizations.CATALOG.values() if not p.fp8],
    "widths": [64, 128, 256],
    "depth": 2,
    "steps": 3,
    "batch_size": 4,
    "seq_len": 64,
    **(config.get("coord_check") or {}),
}

FIGURE_MAP = {
    name: list(sweeps or [])
    for name, sweeps in (config.get("figures") or {}).items()
    if name == "coord_check" or (sweeps and all(s in CELLS for s in sweeps))
}


for _name, _sweeps in FIGURE_MAP.items():
    _read = COORD_CHECK["parametrizations"] if _name == "coord_check" else _sweeps

    rule:
        name:
            f"figure_{_name}"
        input:
            figure_tables(_name, _read),
            [summary for s in _sweeps for summary in summaries(s)],  # a deleted run folder reruns its cell
        output:
            pdf=f"figures/{_name}.pdf",
            png=report(f"figures/{_name}.png", caption="../report/figure.rst", category="Figures"),
            data=f"results/tables/figures/{_name}.csv",
        log:
            f"results/logs/figures/{_name}.log",
        params:
            name=_name,
            caption=figure_catalog.caption(_name),
            sweeps=" ".join(_read),
        threads: 1
        # plotting reads tables and takes seconds: on a cluster it runs in the driver, not as a job
        localrule: True
        conda:
            "../envs/umup-repro.yaml"
        shell:
            "umup-repro plot {params.name} --tables results/tables --sweeps {params.sweeps}"
            " --out {output.pdf} --data {output.data} > {log} 2>&1"

    ALL_TARGETS.append(f"figures/{_name}.pdf")


if "coord_check" in FIGURE_MAP:

    rule coord_check_tables:
        output:
            table="results/tables/coord_check/{parametrization}/coord_check.csv",
            slopes="results/tables/coord_check/{parametrization}/coord_check_slopes.csv",
        wildcard_constraints:
            parametrization="|".join(COORD_CHECK["parametrizations"]),
        log:
            "results/logs/figures/coord_check_{parametrization}.log",
        params:
            widths=",".join(str(w) for w in COORD_CHECK["widths"]),
            depth=COORD_CHECK["depth"],
            steps=COORD_CHECK["steps"],
            batch_size=COORD_CHECK["batch_size"],
            seq_len=COORD_CHECK["seq_len"],
        threads: 1
        conda:
            "../envs/umup-repro.yaml"
        shell:
            "OMP_NUM_THREADS={threads} umup-repro coord-check --parametrization {wildcards.parametrization}"
            " --widths {params.widths} --depth {params.depth} --steps {params.steps}"
            " --batch-size {params.batch_size} --seq-len {params.seq_len}"
            " --out results/tables/coord_check/{wildcards.parametrization} > {log} 2>&1"
