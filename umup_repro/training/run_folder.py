"""The run folder of one cell: its files, its state, its lock, and the summary that completes it.

    config.yaml    the resolved config, written before training starts
    metrics.csv    step, tokens, train_loss, val_loss, lr
    rms.csv        step, tensor, kind, rms   (kind: weight, activation, grad)
    parametrization.csv  per weight: role, shape, init std (rule, measured), multiplier, LR factor,
                   peak LR (umup_repro/model/parametrization_table.py), written before training starts
    checkpoints/   last.ckpt while the run is incomplete (removed at the end unless kept)
    summary.json   written last, atomically: its presence means the run is complete

(docs/design.md.) Every file is written whole (umup_repro/core/atomic.py), so a kill at any moment
leaves the old file or the new one. A folder holding another config is refused, never
overwritten. torch is not imported here, so finding a folder complete stays fast.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from umup_repro.core.atomic import write_text
from umup_repro.core.config import RunConfig, config_hash, config_to_dict, flatten_config, resolve_config
from umup_repro.training.run_format import (
    CHECKPOINT,
    METRICS_COLUMNS,
    RMS_COLUMNS,
    RUN_FILES,
    CellError,
    ReadBackError,
    RunFolderError,
    check_rows_of,
    check_tables,
    read_summary,
)

if TYPE_CHECKING:
    import torch

# --------------------------------------------------------------------------------------------
# State and lock


def check_out(out: Path) -> None:
    """Refuse an --out that is a file, or a folder holding files of its own and no config.yaml
    (not a run folder: its files would be overwritten). Temp files of atomic writes are ours."""
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a folder; choose a folder path")
    ancestor = next((p for p in out.absolute().parents if p.exists()), None)
    if not out.exists() and ancestor is not None and not ancestor.is_dir():
        raise RunFolderError(f"--out {out}: {ancestor} is a file, not a folder; choose another path")
    if out.is_dir() and not (out / "config.yaml").exists():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in RUN_FILES and ".tmp-" not in p.name)
        if foreign:
            raise RunFolderError(
                f"--out {out} is not a run folder of this tool (it holds {', '.join(foreign[:5])});"
                " choose a new or empty folder"
            )


def folder_state(out: Path, resolved: dict) -> str:
    """ "complete" (summary present, same config), "resume" (same config, incomplete) or "new".
    Raises RunFolderError when the folder holds another config, or a config.yaml or summary.json
    that does not read back (umup_repro/training/run_format.py). Call it under the folder's lock."""
    from umup_repro.core.safe_yaml import load as load_yaml

    cfg = out / "config.yaml"
    if cfg.exists():
        try:
            existing = load_yaml(cfg.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise RunFolderError(
                f"{cfg}: not a readable config ({err}); delete the run folder or choose another --out"
            ) from None
        if existing != resolved:
            raise RunFolderError(
                f"run folder {out} holds a different config (differs in: {config_difference(existing, resolved)});"
                " choose another --out or delete the folder"
            )
        if not (out / "summary.json").exists():
            return "resume"
        try:
            read_summary(out / "summary.json", config_hash_of(resolved))
        except ReadBackError as err:
            raise RunFolderError(str(err)) from None
        return "complete"
    if (out / "summary.json").exists():
        raise RunFolderError(f"run folder {out} has a summary.json but no config.yaml; not a run folder of this tool")
    return "new"


SECTION_ORDER = ("parametrization", "model", "data", "train", "distributed", "log", "hp")


def config_difference(existing: Any, asked: Any, shown: int = 8) -> str:
    """The keys that differ, most significant first (parametrization, then model, data, train, …,
    hp last), with both values; keys that only follow from a different parametrization (its hp
    defaults, default LR and embedding LR rule) are summarised, not listed."""
    from umup_repro.core.config import DEFAULT_EMB_LR_RULE, DEFAULT_LR, HP_DEFAULTS

    old, new = _flat(existing), _flat(asked)
    keys = [k for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]
    params = [str(old.get("parametrization")), str(new.get("parametrization"))]

    def follows(key: str) -> bool:  # each side at its own parametrization's default
        if params[0] == params[1] or not all(p in HP_DEFAULTS for p in params):
            return False
        defaults: list[Any]
        if key.startswith("hp."):
            defaults = [HP_DEFAULTS[p].get(key[3:]) for p in params]
        elif key in ("train.lr", "train.emb_lr_rule"):
            table: dict[str, Any] = DEFAULT_LR if key == "train.lr" else DEFAULT_EMB_LR_RULE
            defaults = [table[p] for p in params]
        else:
            return False
        return [old.get(key), new.get(key)] == defaults or [old.get(key), new.get(key)] == [None, None]

    def rank(key: str) -> int:
        head = key.split(".", 1)[0]
        return SECTION_ORDER.index(head) if head in SECTION_ORDER else len(SECTION_ORDER)

    listed = sorted((k for k in keys if not follows(k)), key=rank)  # (stable: the config's order within a section)
    implied = len(keys) - len(listed)
    parts = [f"{k} (folder {old.get(k)!r}, asked {new.get(k)!r})" for k in listed[:shown]]
    if len(listed) > shown:
        parts.append(f"{len(listed) - shown} more")
    if implied:
        parts.append(f"{implied} hp/LR defaults that follow from the parametrization")
    return "; ".join(parts) or "layout"


def config_hash_of(resolved: dict) -> str:
    return config_hash(resolve_config(resolved))


def _flat(d: Any, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold the folder's lock (`.lock`) for a training process; CellError if another holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(out / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise CellError(f"run folder {out} is in use by another process") from None
    except OSError as err:  # a read-only file system, no permission
        raise CellError(f"run folder {out}: cannot take its lock ({err})") from None
    try:
        yield
    finally:
        lock.release()


def prepare(out: Path, config: RunConfig, state: str) -> bool:
    """Under the lock, before training: write config.yaml into a new folder and remove the
    checkpoint temp files a killed run left. False when another process completed the run
    meanwhile (nothing to train)."""
    if state == "new" or not (out / "config.yaml").exists():
        write_text(out / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False))
    elif (out / "summary.json").exists():
        return False
    checkpoints = (out / CHECKPOINT).parent
    for stale in checkpoints.glob(".*.tmp-*") if checkpoints.exists() else ():
        stale.unlink(missing_ok=True)
    return True


# --------------------------------------------------------------------------------------------
# Files


def _fmt(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def metrics_csv(metrics: dict[int, dict]) -> str:
    lines = [",".join(METRICS_COLUMNS)]
    for step in sorted(metrics):
        r = metrics[step]
        lines.append(f"{step},{r['tokens']},{_fmt(r['train_loss'])},{_fmt(r['val_loss'])},{_fmt(r['lr'])}")
    return "\n".join(lines) + "\n"


def rms_csv(rows: list) -> str:
    lines = [",".join(RMS_COLUMNS)] + [f"{s},{name},{kind},{_fmt(v)}" for s, name, kind, v in rows]
    return "\n".join(lines) + "\n"


def write_rows(out: Path, metrics: dict[int, dict], rms: list) -> None:
    """metrics.csv and rms.csv, rewritten whole from the logged rows."""
    write_text(out / "metrics.csv", metrics_csv(metrics))
    write_text(out / "rms.csv", rms_csv(rms))


def write_summary(out: Path, summary: dict) -> None:
    """Declare the run complete: summary.json, the folder's last file, written atomically."""
    write_text(out / "summary.json", json.dumps(summary, indent=1, allow_nan=False) + "\n")


def remove_checkpoints(out: Path) -> None:
    """Remove checkpoints/ of a completed run, except the refused checkpoints moved aside
    (`last.ckpt.unusable*`, train.py): they are kept for inspection, never lost."""
    folder = out / CHECKPOINT.parent
    kept = set(folder.glob(f"{CHECKPOINT.name}.unusable*")) if folder.is_dir() else set()
    if not kept:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for path in set(folder.iterdir()) - kept:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _sweep_name(out: Path, sweep: str | None) -> str:
    return sweep if sweep is not None else out.resolve().parent.name


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def make_summary(config: RunConfig, module, device: torch.device, out: Path, *, sweep: str | None) -> dict:
    """summary.json's content from a trained (or diverged) CellModule."""
    from umup_repro.core.compute import flops_per_token
    from umup_repro.model.decoder import count_parameters
    from umup_repro.training.code_fingerprint import code_fingerprint
    from umup_repro.training.provenance import peak_flops, provenance

    metrics = module.metrics
    trained = [s for s in sorted(metrics) if metrics[s]["train_loss"] is not None]
    validated = [s for s in sorted(metrics) if metrics[s]["val_loss"] is not None]
    steps_done = module.global_step if not module.diverged else (trained[-1] if trained else 0)
    tps = module.timed_tokens / module.train_seconds if module.train_seconds > 0 else 0.0
    fpt = flops_per_token(config)
    peak = peak_flops(device, config.train.precision)  # the peak at the run's precision
    summary = {
        "cell": config_hash(config),
        "sweep": _sweep_name(out, sweep),
        "final_train_loss": _finite_or_none(metrics[trained[-1]]["train_loss"]) if trained else None,
        # A diverged run has no final validation loss: its last one predates the divergence and
        # would read as a result (metrics.csv keeps the rows from before the divergence).
        "final_val_loss": _finite_or_none(metrics[validated[-1]]["val_loss"])
        if validated and not module.diverged
        else None,
        "final_val_step": validated[-1] if validated and not module.diverged else None,
        "diverged": bool(module.diverged),
        "diverged_reason": module.diverged,
        "steps_done": int(steps_done),
        "tokens": int(steps_done) * module.tokens_per_step,
        "wall_seconds": round(module.wall_seconds(), 3),
        "train_seconds": round(module.train_seconds, 3),
        "tokens_per_second": round(tps, 1),
        "flops_per_token": fpt,
        "mfu": round(tps * fpt / peak, 4) if peak else None,
        "parameters": getattr(module, "n_parameters", None) or count_parameters(module.model),
        "attempts": module.attempts,
        **provenance(device),
        "code_fingerprint": code_fingerprint(),  # aggregate refuses sweeps mixing two of these
        "config_hash": config_hash(config),
    }
    summary.update(flatten_config(config))
    return summary


# --------------------------------------------------------------------------------------------
# Reuse


def copy_run(config: RunConfig, src: str | Path, out: str | Path, *, sweep: str | None = None) -> int:
    """Reuse a complete run of the same cell from another sweep's folder (a cell shared by two
    sweeps is trained once). The config must resolve to the same cell; summary.json goes last."""

    src, out = Path(src), Path(out)
    resolved, cell = config_to_dict(config), config_hash(config)
    try:
        if not src.is_dir() or folder_state(src, resolved) != "complete":
            raise CellError(f"not a complete run of cell {cell}")
        summary = read_summary(src / "summary.json", cell)
        check_tables(src, summary)
        check_rows_of(src, summary)
    except (CellError, ReadBackError) as err:
        raise CellError(f"--copy-from {src}: {err}") from None
    check_out(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CellError(f"--out {out}: cannot create the run folder ({err})") from None
    with locked(out):
        if folder_state(out, resolved) == "complete":
            print(f"cell {cell}: already complete in {out}; nothing to do", flush=True)
            return 0
        for name in ("config.yaml", "metrics.csv", "rms.csv", "parametrization.csv"):
            if name != "parametrization.csv" or (src / name).exists():  # (runs from before it existed)
                write_text(out / name, (src / name).read_text(encoding="utf-8"))
        summary.update(sweep=_sweep_name(out, sweep), copied_from=str(src))
        write_summary(out, summary)
    print(f"cell {config_hash(config)}: copied the complete run from {src}", flush=True)
    return 0
