# One job per cell: `umup-repro train` of the cell's resolved config into its run folder.
# The run folder's summary.json is written last and atomically, so its presence means "complete";
# a killed job leaves checkpoints behind and the rerun resumes from them. A diverged run still
# writes its summary (diverged: true) and exits 0, so it never fails the sweep. A distributed
# cell (distributed.nodes × devices > 1) asks for that many tasks; inside a SLURM job `srun`
# starts one rank per device, elsewhere Lightning's launcher starts them. Snakemake deletes a
# job's log before it starts, so a job refused because its cell is in use (an orphaned trainer)
# would erase the running one's: every attempt also appends to <cell>.attempts.log (train --log).
# `batch_cells: N` (> 1) trains up to N cells in one warm process: each job's `umup-repro train`
# hands its cell to a server that imported torch and Lightning once and forks a child per cell
# (umup_repro/training/cell_server.py); the job, its files and its exit code are unchanged.

from umup_repro.training.distributed import srun_prefix

# optional experiment loggers of every cell (`loggers: [tensorboard]` in a preset or --config)
if config.get("loggers"):
    os.environ.update(UMUP_LOGGERS=",".join(config["loggers"]))  # read by every `umup-repro train`

wildcard_constraints:
    sweep="|".join(CELLS) or "NO_SWEEPS",
    cell="[0-9a-f]{12}",


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
    benchmark:
        "results/benchmarks/train/{sweep}/{cell}.tsv"  # wall time, max RSS: what mem_mb should be
    params:
        config=lambda w: cell_of(w).config_json,
        reuse=lambda w, input: f"--copy-from {os.path.dirname(input[0])}" if input else "",
        launch=lambda w, input: "" if input else srun_prefix(cell_of(w).config),
        server=lambda w, input: batch_server(w, input),
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
    conda:
        "../envs/umup-repro.yaml"
    shell:
        "printf '%s' {params.config:q} | OMP_NUM_THREADS={threads} UMUP_CELL_SERVER={params.server} {params.launch}umup-repro train -"
        " --out results/runs/{wildcards.sweep}/{wildcards.cell} --sweep {wildcards.sweep}"
        " --cell {wildcards.cell} --progress lines {params.reuse}"
        " --log results/logs/train/{wildcards.sweep}/{wildcards.cell}.attempts.log > {log} 2>&1"
