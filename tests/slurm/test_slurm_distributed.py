"""A distributed cell on the real SLURM test cluster (see conftest.py): 2 ranks as 2 SLURM tasks
started by the rule's `srun`, requeued once by `scancel --signal=USR2`, ending with the result of
an uninterrupted local 2-process run."""

import json
import subprocess
import time

import pytest
import yaml
from test_slurm import cell, on_cluster, sacct

pytestmark = pytest.mark.slurm


@pytest.mark.long  # ≈ 1 min; tests/test_distributed.py kills and resumes 2-process runs on every CI run
def test_two_task_cell_is_requeued_and_resumes_to_the_uninterrupted_result(cluster_env, tmp_path):
    two = cell(
        "d",
        steps=200,
        train={"checkpoint_every": 20, "batch_size": 4},
        log={"rms_every": 100, "val_every": 100},
        distributed={"devices": 2},
        resources={"cpus_per_task": 1},
    )
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "config.yaml").write_text(yaml.safe_dump(two["config"]))
    env = {k: v for k, v in cluster_env.items() if not k.startswith(("UMUP_SLURM", "SLURM_"))}
    subprocess.run(
        ["umup-repro", "train", "config.yaml", "--out", "run", "--progress", "none"],
        cwd=ref,
        env=env,
        check=True,
        capture_output=True,
        timeout=900,
    )

    work = tmp_path / "cluster"
    proc = on_cluster(work, {"two": two}, cluster_env, background=True)
    run = work / "results/runs/d/two"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (run / "checkpoints" / "last.ckpt").exists():
            assert proc.poll() is None, (work / "snakemake.out").read_text()
            time.sleep(0.5)
        assert (run / "checkpoints" / "last.ckpt").exists()
        [(job_id, _, _)] = [r for r in sacct("JobID", "JobName", "State") if r[1] == "two" and r[2] == "RUNNING"]
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.terminate()
    out = (work / "snakemake.out").read_text()
    assert proc.returncode == 0, out
    log = next((work / "results/logs/slurm/two").glob(f"{job_id}_0_log.out")).read_text()
    assert "Requeued job" in log, log
    train_log = (work / "results/logs/train/d/two.log").read_text()
    assert "resuming from" in train_log, train_log
    summary = json.loads((run / "summary.json").read_text())
    assert summary["attempts"] >= 2 and summary["steps_done"] == 200
    assert (run / "metrics.csv").read_bytes() == (ref / "run" / "metrics.csv").read_bytes()
    print(f"\n[slurm] 2-task job {job_id}: requeued and resumed, final train loss {summary['final_train_loss']}")
