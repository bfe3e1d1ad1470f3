"""Which code a run was made by, as far as its numbers go: a hash of the source of the modules a
training run's results depend on, recorded in every summary.json as `code_fingerprint`.

A cell's id hashes its config, not the code, so after a change to, say, the model, old and new
runs of one sweep would share ids; `umup-repro aggregate` compares the fingerprints of a sweep's
runs and refuses to put runs of two code versions into one table.

The list is explicit (not "every module") so that changes which cannot move a number (figures,
tables, the CLI, SLURM) do not invalidate finished runs. A module that changes what a run
computes belongs here; tests/test_provenance_code.py checks every listed file exists.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # umup_repro/

# source files (relative to umup_repro/) whose content decides a training run's numbers
RESULT_MODULES = (
    "core/config.py",  # defaults, resolution of the parametrization's rules
    "core/parametrizations.py",  # each parametrization's family, HP defaults, default η, embedding-LR rule, FP8
    "model/parametrization.py",  # init std, multipliers, LR factors
    "model/ops.py",  # unit-scaled ops
    "model/fp8.py",  # FP8 casts
    "model/decoder.py",  # the decoder
    "model/optim.py",  # Adam and its parameter groups
    "model/rms.py",  # what the RMS log measures
    "training/lightning_module.py",  # the training step, schedule, divergence check
    "training/train.py",  # the run's lifecycle (seeds, resume)
    "training/trainer.py",  # the Trainer's settings (precision, determinism)
    "training/distributed.py",  # which rows of a step's batch each rank trains on
    "data/__init__.py",
    "data/batches.py",  # which tokens form a batch
    "data/cache.py",
    "data/corpora.py",  # the corpora and their validation split
    "data/tokenizer.py",  # the BPE tokenizer
    "data/tokens.py",
)


class MissingModuleError(RuntimeError):
    """A listed module is gone (renamed?): the list must be updated, not silently shortened."""


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """12 hex digits of SHA-256 over the listed modules' paths and source bytes."""
    digest = hashlib.sha256()
    for name in RESULT_MODULES:
        path = PACKAGE / name
        if not path.is_file():
            raise MissingModuleError(f"umup_repro/{name} is listed in code_fingerprint.RESULT_MODULES but missing")
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]
