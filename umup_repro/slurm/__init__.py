"""The SLURM executor side, used by the Snakemake plugin in `plugins/submitit/`: resource mapping,
sbatch script and the requeueing shell command (`submit`), job states from `sacct` with bounded
failure (`status`).

May import: nothing of umup_repro (the plugin runs in Snakemake's driver).
"""
