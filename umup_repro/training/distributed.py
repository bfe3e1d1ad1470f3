"""Distributed cells: which rank this process is, and Lightning's strategy for a cell.

A cell with `distributed.nodes × distributed.devices > 1` trains with one process per device
through Lightning's own strategies: on one machine Lightning's launcher starts the other ranks
(re-running the same command), under SLURM `srun` starts one task per device and Lightning's
SLURM environment reads the ranks. Nothing here launches processes.
"""

from __future__ import annotations

import os

from umup_repro.core.config import RunConfig
from umup_repro.training.run_format import CellError


def global_rank() -> int:
    """This process's rank before any Trainer exists, from the variables Lightning's launcher
    (RANK, LOCAL_RANK) or srun (SLURM_PROCID) set, in Lightning's order; 0 when alone."""
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def build_strategy(config: RunConfig):
    """ "auto" for one process; DDP (replicas; gloo on CPU, NCCL on GPUs); FSDP (parameters,
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
        raise CellError(
            "distributed.strategy fsdp needs CUDA GPUs (Lightning's FSDPStrategy refuses the CPU);"
            " use distributed.strategy ddp on CPU"
        )
    import functools

    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy

    return FSDPStrategy(
        auto_wrap_policy=functools.partial(lambda_auto_wrap_policy, lambda_fn=_fsdp_unit),
        state_dict_type="full",
        use_orig_params=True,
    )


def _fsdp_unit(module) -> bool:
    """FSDP units: each block, the embedding and the readout. Every parameter then sits in a unit
    whose own forward gathers it, so validation (outside Lightning's training step) works."""
    from umup_repro.model.decoder import Block, Embedding, Linear

    return isinstance(module, (Block, Embedding)) or (isinstance(module, Linear) and module.readout)


def full_parameters(trainer):
    """Context in which every rank sees whole parameters and gradients (FSDP gathers them; a
    no-op otherwise): what per-tensor RMS logging reads. Collective: every rank enters it."""
    import contextlib

    from lightning.pytorch.strategies import FSDPStrategy

    if not isinstance(trainer.strategy, FSDPStrategy):
        return contextlib.nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel

    model = trainer.strategy.model
    assert model is not None, "an FSDP strategy holds its wrapped model once fitting started"
    return FullyShardedDataParallel.summon_full_params(model, writeback=False, with_grads=True)


def srun_prefix(config: RunConfig) -> str:
    """The shell words that start a distributed cell's ranks inside a SLURM job: `srun` with one
    task per device (`--overlap`: the job's own step holds the allocation's GPUs too; `--input
    all`: every rank reads the piped config). Empty for one process; outside SLURM the words
    expand to nothing and Lightning's launcher starts the ranks."""
    d = config.distributed
    if d.world_size == 1:
        return ""
    return (
        f"${{SLURM_JOB_ID:+srun --nodes={d.nodes} --ntasks={d.world_size} --ntasks-per-node={d.devices}"
        " --overlap --input=all --kill-on-bad-exit=1} "
    )
