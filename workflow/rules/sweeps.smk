# One job per cell: `umup-repro train` of the cell's resolved config into its run folder.
# The run folder's summary.json is written last and atomically, so its presence means "complete";
# a killed job leaves checkpoints behind and the rerun resumes from them. A diverged run still
# writes its summary (diverged: true) and exits 0, so it never fails the sweep. A distributed
# cell (distributed.nodes × devices > 1) asks for that many tasks; inside a SLURM job `srun`
# starts one rank per device, elsewhere Lightning's launcher starts them.

from umup_repro.distributed import srun_prefix

wildcard_constraints:
    sweep="|".join(CELLS) or "NO_SWEEPS",
    cell="[0-9a-f]{12}",


def cell_of(wildcards):
    try:
        return CELLS[wildcards.sweep][wildcards.cell]
    except KeyError:
        raise ValueError(f"results/runs/{wildcards.sweep}/{wildcards.cell}: no such cell in preset"
                         f" {config['preset']!r} (list them with: umup-repro cells --preset {config['preset']} --list)")


# A job that only copies a cell trained in another sweep needs a CPU for seconds, never a GPU.
COPY_RESOURCES = {"runtime": 5, "mem_mb": 1000, "gpus": 0, "cpus_per_task": 1}


def cell_resources(key, default=None):
    """A resource of the cell (preset and sweep `resources`); runtime scaled from its FLOPs."""
    def get(wildcards):
        cell = cell_of(wildcards)
        if HOME.get(wildcards.cell, wildcards.sweep) != wildcards.sweep and key in COPY_RESOURCES:
            return COPY_RESOURCES[key]
        if key == "runtime" and "runtime" not in cell.resources:
            return grid.runtime_minutes(cell, config.get("compute"))
        return cell.resources.get(key, default)
    return get


# A cell reached by several sweeps (same config, same id) is trained once, in the first sweep
# that lists it (its home); the other sweeps copy the finished run.
HOME = {}
for _sweep, _cells in CELLS.items():
    for _cid in _cells:
        HOME.setdefault(_cid, _sweep)


def home_summary(wildcards):
    home = HOME.get(wildcards.cell, wildcards.sweep)
    return [] if home == wildcards.sweep else [f"results/runs/{home}/{wildcards.cell}/summary.json"]


def summaries(sweep):
    return [f"results/runs/{sweep}/{cid}/summary.json" for cid in CELLS[sweep]]


# Every cell's summary is a target of `all` (and figures list their cells too), because Snakemake
# (>= 7.7) does not rebuild a deleted intermediate file while the files made from it are up to
# date: naming the summaries as targets makes a deleted run folder rerun that cell.
for _sweep in CELLS:
    ALL_TARGETS.extend(summaries(_sweep))


rule train_cell:
    input:
        home_summary,
    output:
        "results/runs/{sweep}/{cell}/summary.json",
    log:
        "results/logs/train/{sweep}/{cell}.log",
    params:
        config=lambda w: cell_of(w).config_json,
        reuse=lambda w, input: f"--copy-from {os.path.dirname(input[0])}" if input else "",
        launch=lambda w, input: "" if input else srun_prefix(cell_of(w).config),
    threads: config.get("threads_per_cell", 1)
    resources:
        runtime=cell_resources("runtime"),
        mem_mb=cell_resources("mem_mb", 4000),
        gpus=cell_resources("gpus", 0),
        cpus_per_task=cell_resources("cpus_per_task", 1),
        slurm_partition=cell_resources("slurm_partition", ""),
        slurm_account=cell_resources("slurm_account", ""),
        slurm_qos=cell_resources("slurm_qos", ""),
        slurm_constraint=cell_resources("slurm_constraint", ""),
        nodes=lambda w: cell_of(w).config.distributed.nodes,
        tasks_per_node=lambda w: cell_of(w).config.distributed.devices,
    shell:
        "printf '%s' {params.config:q} | OMP_NUM_THREADS={threads} {params.launch}umup-repro train -"
        " --out results/runs/{wildcards.sweep}/{wildcards.cell} --sweep {wildcards.sweep}"
        " --cell {wildcards.cell} --progress lines {params.reuse} > {log} 2>&1"
