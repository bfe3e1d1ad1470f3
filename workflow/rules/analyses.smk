# The authors' notes as analyses (umup_repro/analyses/): CPU-only, no inputs, fixed seeds.
# Each rule runs `umup-repro analysis NAME` once and names every file it writes.

if config.get("analyses", True):  # a preset may leave them out of `all` (smoke: CI tests them apart)
    ALL_TARGETS.extend(f"figures/{name}.pdf" for name in figure_catalog.ANALYSIS_FIGURES)


rule analysis_instructive_example:
    output:
        table="results/tables/instructive_example.csv",
        slopes="results/tables/instructive_example_slopes.csv",
        pdf="figures/instructive_example.pdf",
        png=report("figures/instructive_example.png", caption="../report/figure.rst", category="Analyses"),
    log:
        "results/logs/analyses/instructive_example.log",
    params:
        caption=figure_catalog.caption("instructive_example"),
    threads: 1
    conda:
        "../envs/umup-repro.yaml"
    shell:
        "umup-repro analysis instructive_example --table {output.table}"
        " --slopes-table {output.slopes} --figure {output.pdf} > {log} 2>&1"


rule analysis_embedding_update:
    output:
        table="results/tables/embedding_update.csv",
        slopes="results/tables/embedding_update_slopes.csv",
        pdf="figures/embedding_update.pdf",
        png=report("figures/embedding_update.png", caption="../report/figure.rst", category="Analyses"),
    log:
        "results/logs/analyses/embedding_update.log",
    params:
        caption=figure_catalog.caption("embedding_update"),
    threads: 2
    resources:
        mem_mb=6000,
    conda:
        "../envs/umup-repro.yaml"
    shell:
        "umup-repro analysis embedding_update --table {output.table}"
        " --slopes-table {output.slopes} --figure {output.pdf} > {log} 2>&1"


rule analysis_low_rank:
    output:
        table="results/tables/low_rank.csv",
        plateaus="results/tables/low_rank_plateaus.csv",
        alignment="results/tables/low_rank_alignment.csv",
        pdf="figures/low_rank.pdf",
        png=report("figures/low_rank.png", caption="../report/figure.rst", category="Analyses"),
        alignment_pdf="figures/low_rank_alignment.pdf",
        alignment_png=report("figures/low_rank_alignment.png", caption="../report/alignment.rst", category="Analyses"),
    log:
        "results/logs/analyses/low_rank.log",
    params:
        caption=figure_catalog.caption("low_rank"),
        alignment_caption=figure_catalog.caption("low_rank_alignment"),
    threads: 2
    conda:
        "../envs/umup-repro.yaml"
    shell:
        "umup-repro analysis low_rank --table {output.table}"
        " --plateau-table {output.plateaus} --alignment-table {output.alignment}"
        " --figure {output.pdf} --alignment-figure {output.alignment_pdf} > {log} 2>&1"
