# Staged searches (umup_repro/staged.py) and pairwise transfer error (umup_repro/transfer_error.py).
#
# A staged sweep's later stages depend on results: the checkpoint `search_stage` decides stage
# `lr` from its runs (results/search/<sweep>/lr.json), which adds stage `hp`'s cells to the DAG;
# deciding stage `hp` adds the `combined` run. `snakemake -n` before any run shows stage `lr`
# only. Cell ids stay hashes of resolved configs: a later-stage cell is an ordinary train_cell job.

from umup_repro import staged

STAGED_SWEEPS = [s for s in CELLS if staged.is_staged(config["sweeps"][s])]
PAIR_SWEEPS = [s for s in CELLS if config["sweeps"][s].get("pairs")]
_DECIDED = {}


def decided_cells(sweep):
    """{id: cell} of a sweep given the stage decisions on disk (a static sweep: its cells)."""
    if sweep not in STAGED_SWEEPS:
        return CELLS.get(sweep, {})
    decisions = staged.load_decisions(staged.SEARCH_DIR, sweep)
    key = (sweep, repr(decisions))
    if key not in _DECIDED:
        cells = grid.expand_sweep(sweep, config["sweeps"][sweep], config.get("defaults", {}),
                                  config.get("resources", {}), decisions)
        _DECIDED[key] = {c.id: c for c in cells if not c.alias}
    return _DECIDED[key]


def stage_summaries(sweep, stage):
    """The runs a stage decision reads: stage `lr`'s, plus stage `hp`'s once `lr` is decided (and
    that decision itself, so a changed stage `lr` re-decides stage `hp`)."""
    earlier = []
    if stage == "hp":
        earlier = [checkpoints.search_stage.get(sweep=sweep, stage="lr").output[0]]
    wanted = ("lr",) if stage == "lr" else ("lr", "hp")
    return earlier + [f"results/runs/{sweep}/{cid}/summary.json" for cid, c in decided_cells(sweep).items()
                      if c.search_stage in wanted]


def sweep_summaries(sweep):
    """Every run of a sweep; for a staged sweep, after both decisions (its combined run too),
    which are inputs too: a stale decision is re-decided before the table is written."""
    if sweep not in STAGED_SWEEPS:
        return summaries(sweep)
    decision = checkpoints.search_stage.get(sweep=sweep, stage="hp").output[0]
    return [decision] + [f"results/runs/{sweep}/{cid}/summary.json" for cid in decided_cells(sweep)]


checkpoint search_stage:
    input:
        lambda w: stage_summaries(w.sweep, w.stage),
    output:
        "results/search/{sweep}/{stage}.json",
    wildcard_constraints:
        stage="lr|hp",
    log:
        "results/logs/search/{sweep}_{stage}.log",
    localrule: True  # reads a few summaries: on a cluster it runs in the driver
    params:
        preset=config["preset"],
    shell:
        "umup-repro search-stage --preset {params.preset:q} --sweep {wildcards.sweep} --stage {wildcards.stage}"
        " --runs results/runs --search-dir results/search > {log} 2>&1"


ALL_TARGETS.extend(f"results/tables/{s}.csv" for s in STAGED_SWEEPS)

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
        shell:
            "umup-repro transfer-error --preset {params.preset:q} {params.sweeps} --tables results/tables"
            " --out {output} > {log} 2>&1"

    ALL_TARGETS.append("results/tables/transfer_error.csv")
