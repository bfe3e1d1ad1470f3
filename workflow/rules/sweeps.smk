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
# (umup_repro/training/cell_server.py); the job, its files and its exit code are unchanged. It is
# set in the environment, as the loggers are, not in the rule: a changed shell command or params
# would make Snakemake rerun (retrain) every finished cell of an existing results folder.

# optional experiment loggers of every cell (`loggers: [tensorboard]` in a preset or --config)
if config.get("loggers"):
    os.environ.update(UMUP_LOGGERS=",".join(config["loggers"]))  # read by every `umup-repro train`
if config.get("batch_cells", 1) > 1:
    os.environ[SERVER_ENV] = str(config["batch_cells"])  # read by every `umup-repro train`
else:
    os.environ.pop(SERVER_ENV, None)

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
        config=per_job(lambda w: cell_of(w).config_json),
        reuse=per_job(lambda w, input: f"--copy-from {os.path.dirname(input[0])}" if input else ""),
        launch=train_launch(),  # common.smk: "" if no cell is distributed
    threads: config.get("threads_per_cell", 1)
    resources:
        **train_resources(),  # common.smk: constants where every job has the same value
    conda:
        "../envs/umup-repro.yaml"
    shell:
        "printf '%s' {params.config:q} | OMP_NUM_THREADS={threads} {params.launch}umup-repro train -"
        " --out results/runs/{wildcards.sweep}/{wildcards.cell} --sweep {wildcards.sweep}"
        " --cell {wildcards.cell} --progress lines {params.reuse}"
        " --log results/logs/train/{wildcards.sweep}/{wildcards.cell}.attempts.log > {log} 2>&1"
