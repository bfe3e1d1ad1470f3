# Imports, shared state and the input and resource functions of the rules (Snakemake's convention:
# functions apart from rules). Included first: it uses only what the Snakefile defines (config,
# CELLS), and the rule files after it use what it defines.

import inspect
import os

from snakemake import common as snakemake_common

from umup_repro.core import figure_catalog
from umup_repro.sweeps import budget, extend, grid, search_stage
from umup_repro.training.cell_server import SERVER_ENV
from umup_repro.training.distributed import srun_prefix


def per_job(func):
    """A function Snakemake calls per job: it reads the function's signature at every call
    (inspect.signature, a few times per call: seconds over the paper preset's 5,000 jobs), so hand
    it the signature once (issue 25). Without the hook (another Snakemake) only slower."""
    overwrite = getattr(snakemake_common, "overwrite_function_params", None)
    if overwrite is not None:
        overwrite(func, inspect.signature(func).parameters)
    return func


def cell_of(wildcards):
    try:
        return CELLS[wildcards.sweep][wildcards.cell]
    except KeyError:
        if wildcards.cell in decided_cells(wildcards.sweep):  # a later stage or pass (search.smk)
            return decided_cells(wildcards.sweep)[wildcards.cell]
        raise ValueError(f"results/runs/{wildcards.sweep}/{wildcards.cell}: no such cell in preset"
                         f" {config['preset']!r} (list them with: umup-repro cells --preset {config['preset']} --list)")


# A job that only copies a cell trained in another sweep needs a CPU for seconds, never a GPU.
COPY_RESOURCES = {"runtime": 5, "mem_mb": 1000, "gpus": 0, "cpus_per_task": 1}


def cell_resources(key, default=None):
    """A resource of the cell (preset and sweep `resources`); runtime scaled from its FLOPs."""
    @per_job
    def get(wildcards):
        cell = cell_of(wildcards)
        if HOME.get(wildcards.cell, wildcards.sweep) != wildcards.sweep and key in COPY_RESOURCES:
            return COPY_RESOURCES[key]
        if key == "runtime" and "runtime" not in cell.resources:
            return budget.runtime_minutes(cell, config.get("compute"))
        return cell.resources.get(key, default)
    return get


# A cell reached by several sweeps (same config, same id) is trained once, in the first sweep
# that lists it (its home); the other sweeps copy the finished run.
HOME = {}
for _sweep, _cells in CELLS.items():
    for _cid in _cells:
        HOME.setdefault(_cid, _sweep)


@per_job
def home_summary(wildcards):
    home = HOME.get(wildcards.cell, wildcards.sweep)
    return [] if home == wildcards.sweep else [f"results/runs/{home}/{wildcards.cell}/summary.json"]


# train_cell's resources and launch words: where a value is the same for every job this DAG can
# have, a constant: Snakemake evaluates a function per job (issue 25: seconds of the paper preset's
# dry run). A later stage's cells share their sweep's `resources`, and their `distributed` section
# is among the known cells' unless a staged search varies a distributed.* key.
def _constant(values):
    """(True, the value) if every value is the same (and of one type), else (False, None)."""
    if values and all(type(v) is type(values[0]) and v == values[0] for v in values):
        return True, values[0]
    return False, None


def _distribution_known():
    stages = [b["staged"] for s in STAGED_SWEEPS for b in config["sweeps"][s]["blocks"] if "staged" in b]
    keys = [k for st in stages for part in st.values() if isinstance(part, dict) for k in part]
    keys += [config["sweeps"][s]["extend"]["axis"] for s in EXTENDED_SWEEPS]
    return not any(k.split(".")[0] == "distributed" for k in keys)


def _all_cells():
    return [c for cells in CELLS.values() for c in cells.values()]


def train_resources():
    defaults = {"runtime": None, "mem_mb": 4000, "gpus": 0, "cpus_per_task": 1, "slurm_partition": "",
                "slurm_account": "", "slurm_qos": "", "slurm_constraint": ""}
    copies = any(HOME[cid] != sweep for sweep, cells in CELLS.items() for cid in cells)
    out = {}
    for key, default in defaults.items():
        values = [c.resources.get(key, default) for c in _all_cells()]
        if copies and key in COPY_RESOURCES:
            values.append(COPY_RESOURCES[key])
        constant, value = _constant(values if key != "runtime" else [])
        out[key] = value if constant else cell_resources(key, default)
    for key, field in (("nodes", "nodes"), ("tasks_per_node", "devices")):
        constant, value = _constant([getattr(c.config.distributed, field) for c in _all_cells()])
        if constant and _distribution_known():
            out[key] = value
        else:
            out[key] = per_job(lambda w, field=field: getattr(cell_of(w).config.distributed, field))
    return out


def train_launch():
    """The words that start a distributed cell's ranks (none for a copy). Always a function of the
    job's input, even when no cell is distributed: Snakemake records the params that do not depend
    on the input, so a constant here would count as changed params and rerun (retrain) every
    finished cell of a results folder made before (tests/test_workflow.py)."""
    if _distribution_known() and all(c.config.distributed.world_size == 1 for c in _all_cells()):
        return per_job(lambda w, input: "")
    return per_job(lambda w, input: "" if input else srun_prefix(cell_of(w).config))


def summaries(sweep):
    return [f"results/runs/{sweep}/{cid}/summary.json" for cid in CELLS[sweep]]


def figure_tables(name, sweeps):
    """The tables figure `name` reads for `sweeps` (parametrizations for coord_check): the catalog's."""
    return [f"results/tables/{path}" for path in figure_catalog.tables_needed(name, sweeps)]


# Staged searches and extended grids (search.smk): a sweep's cells given the decisions on disk.

STAGED_SWEEPS = [s for s in CELLS if search_stage.is_staged(config["sweeps"][s])]
EXTENDED_SWEEPS = [s for s in CELLS if extend.is_extended(config["sweeps"][s])]
_DECIDED = {}  # (sweep, decisions) -> its cells


def decided_cells(sweep, passes=None):
    """{id: cell} of a sweep given the stage decisions and the first `passes` grid extensions on
    disk (default: every pass decided); a static sweep: its cells."""
    if sweep not in STAGED_SWEEPS and sweep not in EXTENDED_SWEEPS:
        return CELLS.get(sweep, {})
    decisions = extend.sweep_decisions(search_stage.SEARCH_DIR, sweep, config["sweeps"][sweep], passes)
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


def pass_summaries(sweep, k):
    """What pass k of a grid extension reads: passes 1 … k−1 (so a changed pass re-decides the
    later ones) and every run they leave in the sweep."""
    earlier = [checkpoints.extend_grid.get(sweep=sweep, k=j).output[0] for j in range(1, k)]
    return earlier + [f"results/runs/{sweep}/{cid}/summary.json" for cid in decided_cells(sweep, k - 1)]


def sweep_summaries(sweep):
    """Every run of a sweep; for a staged sweep, after both decisions (its combined run too), for
    an extended one after its last pass (one that adds nothing, or pass `max`); the decisions are
    inputs too: a stale decision is re-decided before the table is written."""
    if sweep in EXTENDED_SWEEPS:
        passes = []
        for k in range(1, extend.max_passes(config["sweeps"][sweep]) + 1):
            passes.append(checkpoints.extend_grid.get(sweep=sweep, k=k).output[0])
            if not extend.pass_points(passes[-1]):
                break
        return passes + [f"results/runs/{sweep}/{cid}/summary.json" for cid in decided_cells(sweep, len(passes))]
    if sweep not in STAGED_SWEEPS:
        return summaries(sweep)
    decision = checkpoints.search_stage.get(sweep=sweep, stage="hp").output[0]
    return [decision] + [f"results/runs/{sweep}/{cid}/summary.json" for cid in decided_cells(sweep)]


# The scorecard (claims.smk) reads those of its tables that this DAG makes.


def made_by_dag(path):
    """Whether a rule of this workflow writes `path` (a sweep table, or a fixed output path)."""
    rel = os.path.relpath(path, "results/tables")
    if rel.endswith(".csv") and os.sep not in rel and rel[:-4] in CELLS:
        return True
    return any(str(f) == path for r in workflow.rules for f in r.output)
