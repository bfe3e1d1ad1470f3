"""Many cells per process (umup_repro/training/cell_server.py): a cell trained in a forked child of
the warm server keeps exactly a plain `umup-repro train`'s contract: the same bytes, the same
resume after SIGKILL, the same checkpoint-and-exit on a stop signal, the same exit codes; and in
the DAG (`batch_cells`) a bad or diverging cell leaves its batch-mates complete, and a SIGKILLed
batch resumes to the same files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_distributed import TWO, cfg, two  # noqa: F401 - fixtures
from test_train import ENV, STEPS, cfg_file, last_metrics_step, run, train_cmd, wait_for  # noqa: F401 - fixture
from workflow_run import snakemake, workflow_copy

from umup_repro.training.cell_server import SERVER_ENV, batch_size, server_key

SERVED = {**ENV, SERVER_ENV: "50"}
FORKED = re.compile(r"in process (\d+), forked by cell server (\d+)")


def served_run(config_path: Path, out: Path, *sets: str) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(config_path, out, *sets), env=SERVED, capture_output=True, text=True, timeout=300)


def served_start(config_path: Path, out: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(train_cmd(config_path, out), env=SERVED, stdout=f, stderr=subprocess.STDOUT)


def forked(text: str) -> tuple[int, int]:
    """(the cell's process, the server) a served command reported."""
    m = FORKED.search(text)
    assert m, f"the cell did not run in the cell server:\n{text}"
    return int(m.group(1)), int(m.group(2))


def gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether process `pid` has ended (a zombie awaiting its parent's wait counts as ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def plain(cfg_file, tmp_path_factory) -> Path:
    """The plain (one process, no server) run every served run is compared with."""
    out = tmp_path_factory.mktemp("plain") / "run"
    proc = run(cfg_file, out)
    assert proc.returncode == 0, proc.stderr
    return out


def test_served_cell_is_byte_identical_and_the_server_is_reused(plain, cfg_file, tmp_path):
    first = served_run(cfg_file, tmp_path / "a")
    second = served_run(cfg_file, tmp_path / "b")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    (child_a, server_a), (child_b, server_b) = forked(first.stderr), forked(second.stderr)
    assert server_a == server_b and child_a != child_b  # one warm process, a child per cell
    for out in (tmp_path / "a", tmp_path / "b"):
        for name in ("metrics.csv", "rms.csv", "parametrization.csv", "config.yaml"):
            assert (out / name).read_bytes() == (plain / name).read_bytes(), (out, name)
    # a rerun of a complete cell is a no-op there too; a bad config exits 2 naming the field
    again = served_run(cfg_file, tmp_path / "a")
    assert again.returncode == 0 and "already complete" in again.stdout
    bad = served_run(cfg_file, tmp_path / "c", "model.width=-3")
    assert bad.returncode == 2 and "model.width" in bad.stderr


def test_sigkill_takes_the_cell_down_and_sigterm_checkpoints_then_resume_is_exact(plain, cfg_file, tmp_path):
    """As tests/test_train.py's kill test, through the server: a SIGKILLed client leaves no
    orphaned trainer behind; SIGTERM to the client reaches the cell (checkpoint, exit 143)."""
    out = tmp_path / "killed"
    ckpt = out / "checkpoints" / "last.ckpt"
    proc = served_start(cfg_file, out, tmp_path / "1.log")
    wait_for(ckpt.exists, proc, "the first checkpoint")
    proc.kill()
    proc.wait()
    child, server = forked((tmp_path / "1.log").read_text())
    assert gone(child), "the cell kept training after its client was SIGKILLed"
    assert not (out / "summary.json").exists() and 0 <= last_metrics_step(out) < STEPS

    proc = served_start(cfg_file, out, tmp_path / "2.log")
    wait_for(lambda: last_metrics_step(out) >= 20, proc, "the second checkpoint")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, (tmp_path / "2.log").read_text()
    log = (tmp_path / "2.log").read_text()
    assert "resuming from" in log and "stopped by signal 15" in log
    assert forked(log)[1] == server
    assert not (out / "summary.json").exists() and ckpt.exists()

    done = served_run(cfg_file, out)
    assert done.returncode == 0 and "resuming from" in done.stdout, done.stderr
    for name in ("metrics.csv", "rms.csv"):
        assert (out / name).read_bytes() == (plain / name).read_bytes(), name
    assert json.loads((out / "summary.json").read_text())["attempts"] == 3


def test_a_cell_killed_by_a_signal_kills_its_client_with_it(cfg_file, tmp_path):
    proc = served_start(cfg_file, tmp_path / "run", tmp_path / "log")
    wait_for(lambda: FORKED.search((tmp_path / "log").read_text()), proc, "the cell's start")
    child, _ = forked((tmp_path / "log").read_text())
    os.kill(child, signal.SIGKILL)  # as the kernel's out-of-memory killer would
    assert proc.wait(timeout=30) == -signal.SIGKILL


def test_a_distributed_cell_through_the_server_trains_as_its_plain_ranks(cfg, two, tmp_path):
    """Rank 0 runs in a forked child; Lightning's launcher starts rank 1 from the child's command
    as a plain process (a rank never uses the server: batch_size): the same bytes as two plain
    processes."""
    out = tmp_path / "two"
    proc = subprocess.run(
        train_cmd(cfg, out, *TWO) + ["--progress", "lines"], env=SERVED, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    forked(proc.stderr)
    for name in ("metrics.csv", "rms.csv"):
        assert (out / name).read_bytes() == (two / name).read_bytes(), name


def test_ranks_and_batch_cells_1_run_plain():
    assert batch_size({SERVER_ENV: "8"}) == 8
    for environ in ({}, {SERVER_ENV: "1"}, {SERVER_ENV: "x"}, {SERVER_ENV: "8", "LOCAL_RANK": "1"}):
        assert batch_size(environ) == 0, environ
    assert batch_size({SERVER_ENV: "8", "SLURM_NTASKS": "4", "SLURM_PROCID": "0"}) == 0  # srun's ranks
    assert batch_size({SERVER_ENV: "8", "SLURM_NTASKS": "1", "SLURM_JOB_ID": "3"}) == 8  # a plain SLURM job


def test_a_server_folder_open_to_others_is_refused_and_the_cell_trains_plainly(cfg_file, plain, tmp_path):
    """On a shared machine another user could create the socket folder first and listen in it:
    a folder that is not this user's private one is never used (the cell trains in its own process)."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(dir="/tmp", prefix="umup-t"))  # short: a long TMPDIR falls back to /tmp
    try:
        folder = tmp / f"umup-repro-{os.getuid()}"
        folder.mkdir()
        folder.chmod(0o777)
        proc = subprocess.run(
            train_cmd(cfg_file, tmp_path / "run"), env={**SERVED, "TMPDIR": str(tmp)}, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        assert "is not a private folder of this user" in proc.stderr and "forked by cell server" not in proc.stderr
        assert not list(folder.iterdir())  # no socket, no server started there
    finally:
        shutil.rmtree(tmp)
    assert (tmp_path / "run" / "metrics.csv").read_bytes() == (plain / "metrics.csv").read_bytes()


def test_one_server_per_environment_read_at_import_time():
    base = {"PATH": "/usr/bin", "HOME": "/root"}
    assert server_key(base) == server_key({**base, "UMUP_LOGGERS": "csv", SERVER_ENV: "9"})
    assert server_key(base) != server_key({**base, "OMP_NUM_THREADS": "2"})
    assert server_key(base) != server_key({**base, "SLURM_JOB_ID": "17"})  # never shared by two jobs
    assert server_key(base) != server_key({**base, "CUDA_VISIBLE_DEVICES": "1"})


# --------------------------------------------------------------------------------------------
# in the DAG


def test_smoke_sweep_batched_and_unbatched_write_the_same_bytes(smoke_local, tmp_path):
    """The session's smoke run is batched (the preset's batch_cells); one of its sweeps again with
    batch_cells=1, a process per cell as before."""
    batched = smoke_local["root"]
    root = workflow_copy(tmp_path / "wf")
    snakemake(root, "--cores", "2", "results/tables/lr_batch.csv", "--config", "preset=smoke", "batch_cells=1")
    cells = sorted(p.name for p in (root / "results/runs/lr_batch").iterdir())
    assert len(cells) == 4
    trained = 0
    for cid in cells:
        assert "forked by cell server" not in (root / f"results/logs/train/lr_batch/{cid}.log").read_text()
        log = (batched / f"results/logs/train/lr_batch/{cid}.log").read_text()
        trained += "copied the complete run" not in log  # (a cell shared with lr_width is copied)
        assert "forked by cell server" in log or "copied the complete run" in log, log
        for name in ("metrics.csv", "rms.csv"):
            new, old = root / "results/runs/lr_batch" / cid / name, batched / "results/runs/lr_batch" / cid / name
            assert new.read_bytes() == old.read_bytes(), (cid, name)
    assert trained >= 2


BATCH_PRESET = {
    "description": "a batch with a bad and a diverging cell (tests/test_cell_server.py)",
    "threads_per_cell": 1,
    "batch_cells": 100,
    "analyses": False,
    "figures": {},
    "resources": {"gpus": 0, "cpus_per_task": 1, "mem_mb": 2000},
    "defaults": {
        "parametrization": "umup",
        "model": {"width": 32, "depth": 1, "head_dim": 16, "seq_len": 32},
        "data": {"val_batches": 2},
        # long enough (≈ 3 s a cell in a warm server) for the batch to be killed mid-run
        "train": {"steps": 400, "batch_size": 4, "warmup": 2, "checkpoint_every": 5},
        "log": {"rms_every": 100, "val_every": 100},
    },
    "sweeps": {
        "s": {
            "blocks": [
                {"grid": {"train.lr": [0.25, 0.5, 1.0]}},
                {"set": {"train.lr": 1.0e6}},  # diverges
                {"set": {"data.corpus": "text_files", "data.files": ["/nonexistent/corpus.txt"]}},  # exit 2
            ]
        }
    },
}


def batch_workflow(root: Path) -> Path:
    workflow_copy(root)
    (root / "config/presets/batchtest.yaml").write_text(yaml.safe_dump(BATCH_PRESET))
    return root


def run_summaries(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((root / "results/runs/s").glob("*/summary.json"))}


def test_bad_and_diverging_cells_leave_batch_mates_complete_and_a_killed_batch_resumes(tmp_path):
    args = ("--cores", "2", "--keep-going", "--config", "preset=batchtest")
    plain = batch_workflow(tmp_path / "plain")
    proc = snakemake(plain, *args, "batch_cells=1", check=False)
    assert proc.returncode != 0  # the bad cell fails the run...
    summaries = run_summaries(plain)
    assert len(summaries) == 4  # ... and nothing else: 3 good cells and the diverged one are complete
    assert sum(s["diverged"] for s in summaries.values()) == 1

    batched = batch_workflow(tmp_path / "batched")
    env = {**os.environ, "MPLBACKEND": "Agg", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    with open(tmp_path / "first.out", "w") as log:
        first = subprocess.Popen(
            [sys.executable, "-m", "snakemake", *args],
            cwd=batched,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed whole below, as by a scheduler
        )
    ckpts = lambda: list((batched / "results/runs/s").glob("*/checkpoints/last.ckpt"))  # noqa: E731
    wait_for(lambda: len(ckpts()) >= 2, first, "two cells' first checkpoints")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    logs = "".join(p.read_text() for p in (batched / "results/logs/train/s").glob("*.log"))
    children = {int(m.group(1)) for m in FORKED.finditer(logs)}
    assert children and all(gone(pid) for pid in children), "cells kept training after their batch was SIGKILLed"
    killed = run_summaries(batched)
    assert len(killed) < 4, "the batch completed before it could be killed"

    snakemake(batched, "--unlock", "--config", "preset=batchtest")  # a SIGKILLed Snakemake's lock, as its message says
    proc = snakemake(batched, *args, "--rerun-incomplete", check=False)
    assert proc.returncode != 0
    resumed = run_summaries(batched)
    assert resumed.keys() == summaries.keys()
    for cid, summary in resumed.items():
        assert summary["diverged"] == summaries[cid]["diverged"]
        for name in ("metrics.csv", "rms.csv"):
            new, old = batched / "results/runs/s" / cid / name, plain / "results/runs/s" / cid / name
            assert new.read_bytes() == old.read_bytes(), (cid, name)
        if cid in killed:  # a finished cell is not trained again
            assert summary["attempts"] == killed[cid]["attempts"] == 1
    assert any(s["attempts"] == 2 for s in resumed.values()), "no cell was resumed from its checkpoint"
    job_logs = [p for p in (batched / "results/logs/train/s").glob("*.log") if not p.name.endswith(".attempts.log")]
    [bad_log] = [p for p in job_logs if "umup-repro train: error: data" in p.read_text()]
    assert "forked by cell server" in bad_log.read_text()
