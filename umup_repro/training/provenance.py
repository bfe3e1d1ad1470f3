"""Where and from what a run was made: source commit, package versions, device, peak FLOP/s.

Recorded in every summary.json so a result can be traced to the code and hardware behind it.
torch is imported only by the functions that take a device (the caller has it imported already).
"""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from umup_repro.core.compute import PEAK_BF16_FLOPS

if TYPE_CHECKING:
    import torch

# GPU names Lightning 2.6's table maps to another chip ("NVIDIA L40S" reads as the L4)
LIGHTNING_MISREADS = ("L40S",)


def git_commit() -> tuple[str, bool | None]:
    """(commit of the source tree this package runs from, whether it has uncommitted changes)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return commit or "unknown", bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("umup-repro", "torch", "lightning", "numpy", "pydantic", "tokenizers", "datasets"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def describe_device(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def peak_flops(device: torch.device, precision: str = "bf16-mixed") -> float | None:
    """The device's dense peak FLOP/s at the training precision ("bf16-mixed" or "32"; tf32 where
    Lightning would use it), or None (CPU, unknown GPU). Lightning's per-precision table
    (`get_available_flops`), except for chips it misreads; our bf16 table for those it lacks."""
    import warnings

    import torch
    from lightning.fabric.utilities.throughput import get_available_flops

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    if not any(k in name for k in LIGHTNING_MISREADS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "FLOPs not found": we have a fallback
            peak = get_available_flops(device, torch.float32 if precision == "32" else torch.bfloat16)
        if peak:
            return float(peak)
    if precision == "32":
        return None
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def provenance(device: torch.device) -> dict:
    """The summary's provenance fields, in their order: device, hostname, versions, git_commit,
    git_dirty."""
    commit, dirty = git_commit()
    return {
        "device": describe_device(device),
        "hostname": socket.gethostname(),
        "versions": package_versions(),
        "git_commit": commit,
        "git_dirty": dirty,
    }
