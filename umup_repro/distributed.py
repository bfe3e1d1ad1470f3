"""Distributed cells: which rank this process is, and Lightning's strategy for a cell.

A cell with `distributed.nodes × distributed.devices > 1` trains with one process per device
through Lightning's own strategies: on one machine Lightning's launcher starts the other ranks
(re-running the same command), under SLURM `srun` starts one task per device and Lightning's
SLURM environment reads the ranks. Nothing here launches processes.
"""

from __future__ import annotations

import os

from umup_repro.config import RunConfig
from umup_repro.run_folder import CellError


def global_rank() -> int:
    """This process's rank before any Trainer exists, from the variables Lightning's launcher
    (RANK, LOCAL_RANK) or srun (SLURM_PROCID) set, in Lightning's order; 0 when alone."""
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def build_strategy(config: RunConfig):
    """"auto" for one process; DDP (replicas; gloo on CPU, NCCL on GPUs); FSDP (parameters,
    gradients and optimizer state sharded per transformer block; checkpoints gathered whole on
    rank 0, so the run folder keeps its one last.ckpt). Lightning's FSDP needs CUDA GPUs."""
    import torch

    d = config.distributed
    if d.world_size == 1:
        return "auto"
    if d.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy()
    if not torch.cuda.is_available():
        raise CellError("distributed.strategy fsdp needs CUDA GPUs (Lightning's FSDPStrategy refuses the CPU);"
                        " use distributed.strategy ddp on CPU")
    from lightning.pytorch.strategies import FSDPStrategy

    from umup_repro.model import Block

    return FSDPStrategy(auto_wrap_policy={Block}, state_dict_type="full", use_orig_params=True)


def srun_prefix(config: RunConfig) -> str:
    """The shell words that start a distributed cell's ranks inside a SLURM job: `srun` with one
    task per device (`--overlap`: the job's own step holds the allocation's GPUs too; `--input
    all`: every rank reads the piped config). Empty for one process; outside SLURM the words
    expand to nothing and Lightning's launcher starts the ranks."""
    d = config.distributed
    if d.world_size == 1:
        return ""
    return (f"${{SLURM_JOB_ID:+srun --nodes={d.nodes} --ntasks={d.world_size} --ntasks-per-node={d.devices}"
            " --overlap --input=all --kill-on-bad-exit=1} ")
