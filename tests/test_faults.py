"""Fault cases of issue 17 as real `umup-repro train` processes: an unusable checkpoint is
recovered from (the cell starts over, ending identical to a clean run), an absurd LR is a
divergence, and two trainers racing on one run folder never leave files of two cells.

Shapes are tiny (tests/test_hostile.py's TINY) so that a process is mostly Python start-up.
"""

from __future__ import annotations

import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_hostile import ENV, TINY, cfg  # noqa: F401 (cfg: the fixture)

from umup_repro.core.config import config_hash, resolve_config
from umup_repro.training.run_format import check_tables, read_summary


def train_cmd(cfg: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "umup_repro.cli", "train", str(cfg), "--out", str(out), "--progress", "none", *extra]


def test_unusable_checkpoint_restarts_from_scratch_with_a_warning(cfg, tmp_path):
    """A truncated checkpoint is moved aside, the cell starts over and ends identical to a clean
    run (same seed, batches by step: metrics.csv byte-identical)."""
    ref, out = tmp_path / "ref", tmp_path / "run"
    done = subprocess.run(
        train_cmd(cfg, ref, "--keep-checkpoints"), env=ENV, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    # the state a kill after the step-2 checkpoint leaves: config, files, checkpoint, no summary
    out.mkdir()
    for name in ("config.yaml", "metrics.csv", "rms.csv"):
        (out / name).write_bytes((ref / name).read_bytes())
    (out / "checkpoints").mkdir()
    blob = (ref / "checkpoints" / "last.ckpt").read_bytes()
    (out / "checkpoints" / "last.ckpt").write_bytes(blob[: len(blob) // 2])  # truncated
    proc = subprocess.run(train_cmd(cfg, out), env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "checkpoint" in proc.stderr and "unusable" in proc.stderr and "from scratch" in proc.stderr
    assert "last.ckpt" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "metrics.csv").read_bytes() == (ref / "metrics.csv").read_bytes()
    read_summary(out / "summary.json", config_hash(resolve_config(TINY)))


@pytest.mark.parametrize("content", [b"", b"\x80\x04garbage" * 10])
def test_checkpoint_problem_names_empty_and_garbage_files(tmp_path, content):
    from umup_repro.training.run_format import checkpoint_problem

    path = tmp_path / "last.ckpt"
    path.write_bytes(content)
    assert "does not load" in checkpoint_problem(path, "c")


def test_absurd_lr_diverges_instead_of_crashing_and_has_no_final_loss(cfg, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        train_cmd(cfg, out, "--set", "train.lr=1e38"), env=ENV, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["diverged"] is True and "overflow" in summary["diverged_reason"]
    assert summary["final_val_loss"] is None and summary["final_val_step"] is None
    check_tables(out, summary)


def _folder_cells(out: Path) -> set[str]:
    """The cells the folder's files belong to (config.yaml, summary.json)."""
    cells = set()
    if (out / "config.yaml").exists():
        cells.add(config_hash(resolve_config(yaml.safe_load((out / "config.yaml").read_text()))))
    if (out / "summary.json").exists():
        summary = json.loads((out / "summary.json").read_text())
        cells |= {summary["cell"], summary["config_hash"]}
    return cells


def test_two_trainers_racing_on_one_folder_never_mix_two_cells(tmp_path):
    """20 repetitions: two `umup-repro train` processes on one new folder, the second started
    0–3 s after the first (random, seeded: before the first takes the lock, or while it trains),
    with the same config or another cell's, in either order. Each ends in 0 (trained, or found it
    complete) or 2 (folder in use, or holding the other cell); the folder always ends complete
    and holding one cell; exactly one process trained. Two repetitions run at a time."""
    rng = random.Random(17)
    cfgs = {}
    for name, seed in (("a", 0), ("b", 1)):
        cfgs[name] = tmp_path / f"{name}.yaml"
        cfgs[name].write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "steps": 2, "seed": seed}}))
    reps, parallel = 20, 2

    def start(name: str, out: Path) -> subprocess.Popen:
        return subprocess.Popen(
            train_cmd(cfgs[name], out), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = before.ru_utime + before.ru_stime
    for first_rep in range(0, reps, parallel):
        runs = []
        for rep in range(first_rep, min(first_rep + parallel, reps)):
            first, second = ("a", "a") if rep % 2 == 0 else (("a", "b") if rep % 4 == 1 else ("b", "a"))
            runs.append(
                {
                    "rep": rep,
                    "out": tmp_path / f"rep{rep}" / "cell",
                    "names": (first, second),
                    "delay": rng.uniform(0.0, 3.0),
                }
            )
        t0 = time.perf_counter()
        for r in runs:
            r["procs"] = [start(r["names"][0], r["out"])]
        for r in sorted(runs, key=lambda r: r["delay"]):
            time.sleep(max(0.0, t0 + r["delay"] - time.perf_counter()))
            r["procs"].append(start(r["names"][1], r["out"]))
        for r in runs:
            outs = [p.communicate(timeout=300)[0] for p in r["procs"]]
            rcs = [p.returncode for p in r["procs"]]
            out = r["out"]
            where = f"rep {r['rep']} ({' then '.join(r['names'])} after {r['delay']:.2f} s): rc {rcs}\n" + "\n".join(
                outs
            )
            assert set(rcs) <= {0, 2} and 0 in rcs, where
            assert "Traceback" not in "".join(outs), where
            trained = [rc == 0 and "already complete" not in o for o, rc in zip(outs, rcs)]
            assert sum(trained) == 1, where
            cells = _folder_cells(out)
            assert len(cells) == 1, where
            summary = read_summary(out / "summary.json", cells.pop())
            check_tables(out, summary)
            for o, rc in zip(outs, rcs):
                if rc == 2:
                    assert "in use by another process" in o or "holds a different config" in o, where
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"race stress test: {reps} repetitions in {time.perf_counter() - started:.0f} s,"
        f" {children.ru_utime + children.ru_stime - cpu_before:.0f} s of child CPU"
    )
