# Tables -> the replication scorecard (umup_repro/results/claims.py): results/tables/claims.csv, the figure
# figures/claims.{pdf,png} and the page figures/claims.md. It depends on those of its tables (the
# figure catalog's `claims` entry) that this preset's DAG makes; a claim whose tables are not made
# is `not measured`. Included last, so that every rule producing a table is known here.

CLAIM_INPUTS = [p for p in figure_tables("claims", ()) if made_by_dag(p)]


rule claims:
    input:
        CLAIM_INPUTS,
    output:
        table="results/tables/claims.csv",
        pdf="figures/claims.pdf",
        png=report("figures/claims.png", caption="../report/figure.rst", category="Scorecard"),
        page="figures/claims.md",
    log:
        "results/logs/figures/claims.log",
    params:
        caption=figure_catalog.caption("claims"),
    localrule: True
    conda:
        "../envs/umup-repro.yaml"
    shell:
        "umup-repro claims --tables results/tables --inputs {input} --out {output.table}"
        " --figure {output.pdf} --page {output.page} > {log} 2>&1"


ALL_TARGETS.extend(["results/tables/claims.csv", "figures/claims.pdf"])
