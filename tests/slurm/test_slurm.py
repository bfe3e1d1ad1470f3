"""SLURM through submitit on a real single-node cluster (see conftest.py): `snakemake --profile
slurm all` runs the `smoke` preset to the same tables and figures as a local run; a small test
workflow runs real training cells with packing; requeue on USR2 resumes a cell from
its checkpoint; a failing cell is retried then reported with its log tail; status polling is one
sacct call per interval; GPU requests are rendered into the sbatch script."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_run import executed_jobs, workflow_copy
from workflow_run import snakemake as run_workflow

from umup_repro.slurm import submit as slurm
from umup_repro.sweeps import budget, grid

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[2]
SNAKEFILE = Path(__file__).resolve().parent / "workflow" / "Snakefile"
PROFILE = ROOT / "slurm"
TINY = {
    "model": {"width": 32, "depth": 1, "seq_len": 32, "head_dim": 16},
    "train": {"steps": 20, "batch_size": 4},
    "log": {"rms_every": 10, "val_every": 10},
    "data": {"val_batches": 2},
}


def cell(sweep, lr=None, steps=None, resources=None, **overrides):
    config = json.loads(json.dumps(TINY))
    if lr is not None:
        config["train"]["lr"] = lr
    if steps is not None:
        config["train"]["steps"] = steps
    for key, value in overrides.items():
        config.setdefault(key, {}).update(value)
    return {"sweep": sweep, "config": config, "resources": resources or {}}


def snakemake(workdir, cells, env, *args, timeout=300, background=False, batch_cells=""):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "cells.yaml").write_text(yaml.safe_dump({"cells": cells, "batch_cells": batch_cells}))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--configfile", "cells.yaml", *args]
    out = open(workdir / "snakemake.out", "w")
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    if background:
        return proc
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
    return proc.returncode, (workdir / "snakemake.out").read_text()


def on_cluster(workdir, cells, env, *args, **kwargs):
    return snakemake(workdir, cells, env, "--profile", str(PROFILE), *args, **kwargs)


def sacct(*fields, jobs=None):
    cmd = ["sacct", "-X", "-n", "--parsable2", "-o", ",".join(fields)]
    for job in jobs or []:
        cmd += ["-j", str(job)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line]


def test_sbatch_script_renders_gpu_cpu_memory_time_partition_account_qos(slurm_cluster, tmp_path):
    resources = {
        "runtime": 37,
        "mem_mb": 12000,
        "gpus": 1,
        "cpus_per_task": 8,
        "slurm_partition": "gpu",
        "slurm_account": "ci_acct",
        "slurm_qos": "ci_qos",
        "slurm_constraint": "h100",
    }
    params = slurm.submitit_parameters(resources, job_name="0123456789ab", signal_delay_s=90, environ={})
    script = slurm.sbatch_script(params, tmp_path / "0123456789ab")
    lines = set(script.splitlines())
    for expected in (
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=12000M",
        "#SBATCH --time=37",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=ci_acct",
        "#SBATCH --qos=ci_qos",
        "#SBATCH --constraint=h100",
        "#SBATCH --job-name=0123456789ab",
        "#SBATCH --signal=USR2@90",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
    ):
        assert expected in lines, (expected, script)
    assert f"#SBATCH --output={tmp_path}/0123456789ab/%j_0_log.out" in lines
    # defaults: the job's resource, then $UMUP_SLURM_*, then the plugin settings; none: no line
    env = {"UMUP_SLURM_PARTITION": "debug", "UMUP_SLURM_QOS": "ci_qos"}
    params = slurm.submitit_parameters(
        {"runtime": 3, "gpus": 0}, job_name="x", environ=env, defaults={"account": "ci_acct", "partition": "other"}
    )
    script = slurm.sbatch_script(params, tmp_path / "x")
    assert "#SBATCH --partition=debug" in script and "#SBATCH --qos=ci_qos" in script
    assert "#SBATCH --account=ci_acct" in script
    assert not any(line.startswith(("#SBATCH --gpus", "#SBATCH --gres")) for line in script.splitlines())
    assert "--constraint" not in script
    # and sbatch accepts such a script on the cluster (fake GRES gpu:1 on partition gpu)
    params = slurm.submitit_parameters(
        {**resources, "slurm_constraint": None, "runtime": 2, "cpus_per_task": 1, "mem_mb": 500},
        job_name="gpujob",
        environ={},
    )
    job = slurm.submit(
        "nvidia-smi -L 2>/dev/null; echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES",
        tmp_path / "gpujob",
        params,
        label="gpujob",
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        slurm.update_states()
        if slurm.is_terminal(slurm.job_state(job.job_id)):
            break
        time.sleep(1)
    assert slurm.job_state(job.job_id) == "COMPLETED", slurm.tail(slurm.log_path(job))
    [(tres,)] = sacct("AllocTRES", jobs=[job.job_id])
    assert "gres/gpu=1" in tres, tres
    shown = subprocess.run(["scontrol", "show", "job", str(job.job_id)], capture_output=True, text=True).stdout
    assert "Partition=gpu" in shown and "Account=ci_acct" in shown and "QOS=ci_qos" in shown, shown
    assert "CUDA_VISIBLE_DEVICES=0" in slurm.log_path(job).read_text()


def test_workflow_on_cluster_matches_local_run_with_packing_and_batched_status(cluster_env, shim_path, tmp_path):
    cells = {
        "a1": cell("s", lr=0.5),
        "a2": cell("s", lr=2.0),
        "b1": cell("t", lr=1.0, resources={"gpus": 1}),
    }
    local_env = {k: v for k, v in cluster_env.items() if not k.startswith("UMUP_SLURM")}
    code, out = snakemake(tmp_path / "local", cells, local_env, "--cores", "2")
    assert code == 0, out
    t0 = time.time()
    # three cells packed into two SLURM jobs (groups of at most 2; cells in one group must agree
    # on string resources such as slurm_partition, or Snakemake refuses the group)
    # ... and each packed job trains its cells in one warm process (batch_cells, cell_server)
    code, out = on_cluster(
        tmp_path / "cluster",
        cells,
        cluster_env,
        "--groups",
        "train_cell=cells",
        "--group-components",
        "cells=2",
        batch_cells=4,
    )
    elapsed = time.time() - t0
    assert code == 0, out
    for sweep in ("s", "t"):
        local = (tmp_path / "local" / "results" / "tables" / f"{sweep}.csv").read_text()
        remote = (tmp_path / "cluster" / "results" / "tables" / f"{sweep}.csv").read_text()
        assert remote == local
    for cid, c in cells.items():
        run = f"results/runs/{c['sweep']}/{cid}"
        for name in ("metrics.csv", "rms.csv"):
            assert (tmp_path / "cluster" / run / name).read_bytes() == (tmp_path / "local" / run / name).read_bytes(), (
                cid,
                name,
            )
    logs = tmp_path / "cluster" / "results" / "logs"
    slurm_logs = sorted(p.name for p in (logs / "slurm").iterdir())
    assert len(slurm_logs) == 2 and any(p.startswith("group-cells-") for p in slurm_logs), slurm_logs
    assert "forked by cell server" in (logs / "train" / "s" / "a1.log").read_text()  # batch_cells
    # status: one sacct per interval for all jobs, never one per job; one sbatch per SLURM job
    _, calls = shim_path
    calls = calls()
    counts = {name: sum(1 for c in calls if c[0] == name) for name in ("sacct", "squeue", "sbatch")}
    print(f"\n[slurm] {len(cells)} cells in 2 SLURM jobs, {elapsed:.1f} s; scheduler calls {counts}")
    assert counts["sbatch"] == 2
    assert counts["squeue"] == 0
    assert 1 <= counts["sacct"] <= elapsed / 2 + 2
    jobs_per_sacct = [c[1].count("-j ") for c in calls if c[0] == "sacct"]
    assert max(jobs_per_sacct) == 2  # both jobs in flight were asked about in one call
    (tmp_path / "scheduler_calls.json").write_text(json.dumps(counts))


def test_gpu_packing_shares_one_gpu_between_cells_running_at_once_in_one_job(cluster_env, shim_path, tmp_path):
    """Four one-GPU cells in one SLURM job, two at a time (UMUP_SLURM_GROUP_CPUS=2) on one shared
    GPU (UMUP_SLURM_CELLS_PER_GPU=2), all trained by the job's one cell server."""
    cells = {f"g{i}": cell("s", lr=0.25 * 2**i, resources={"gpus": 1}) for i in range(4)}
    env = {**cluster_env, "UMUP_SLURM_GROUP_CPUS": "2", "UMUP_SLURM_CELLS_PER_GPU": "2"}
    code, out = on_cluster(
        tmp_path, cells, env, "--groups", "train_cell=cells", "--group-components", "cells=4", batch_cells=4
    )
    assert code == 0, out
    _, calls = shim_path
    assert sum(1 for c in calls() if c[0] == "sbatch") == 1
    [folder] = (tmp_path / "results/logs/slurm").iterdir()
    [job_id] = {p.name.split("_")[0] for p in folder.glob("*_log.out")}
    [(tres,)] = sacct("AllocTRES", jobs=[job_id])
    assert "gres/gpu=1" in tres and "cpu=2" in tres, tres
    logs = [(tmp_path / f"results/logs/train/s/{cid}.log").read_text() for cid in cells]
    servers = {re.search(r"forked by cell server (\d+)", text).group(1) for text in logs}
    assert len(servers) == 1, logs
    assert all((tmp_path / f"results/runs/s/{cid}/summary.json").exists() for cid in cells)


def test_failing_cell_is_retried_then_reported_with_log_tail_while_others_finish(cluster_env, shim_path, tmp_path):
    cells = {
        "good": cell("s"),
        "bad": cell("s", data={"corpus": "text_files", "files": ["/nonexistent/corpus.txt"]}),
    }
    code, out = on_cluster(tmp_path, cells, cluster_env, "--retries", "2")
    assert code != 0
    assert (tmp_path / "results/runs/s/good/summary.json").exists()
    assert not (tmp_path / "results/runs/s/bad/summary.json").exists()
    _, calls = shim_path
    names = [c[1] for c in calls() if c[0] == "sbatch"]
    assert len(names) == 1 + 3  # good once, bad 1 + 2 retries
    bad_logs = sorted((tmp_path / "results/logs/slurm/bad").glob("*_log.out"))
    assert len(bad_logs) == 3
    # the report names the SLURM job and shows the tail of its log (the rule's error is in it)
    assert "ended FAILED" in out and "Last 40 lines of" in out
    assert "Error in rule train_cell" in out
    train_log = (tmp_path / "results/logs/train/s/bad.log").read_text()
    assert "/nonexistent/corpus.txt is not a file" in train_log
    assert "Last 15 lines of the rule's log results/logs/train/s/bad.log" in out
    assert out.count("/nonexistent/corpus.txt is not a file") >= 3  # each attempt's report
    print(
        f"\n[slurm] bad cell submitted {len(bad_logs)} times; report:\n" + out[out.index("ended FAILED") - 60 :][:600]
    )


def test_cell_interrupted_by_usr2_is_requeued_and_resumes_to_the_same_result(cluster_env, tmp_path):
    # long enough (≈ 25 s on 2 cores in a warm cell server) for sacct to report it RUNNING in time
    long = cell("s", steps=3000, train={"checkpoint_every": 25}, log={"rms_every": 1000, "val_every": 1000})
    cells = {"long": long}
    # the uninterrupted reference, locally with the same thread count
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "config.yaml").write_text(yaml.safe_dump(long["config"]))
    env = {k: v for k, v in cluster_env.items() if not k.startswith("UMUP_SLURM")}
    subprocess.run(
        ["umup-repro", "train", "config.yaml", "--out", "run", "--progress", "none"],
        cwd=ref,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )

    work = tmp_path / "cluster"
    # batched (the cell runs in a forked child of the job's cell server): SLURM's signal reaches it
    proc = on_cluster(work, cells, cluster_env, background=True, batch_cells=4)
    run = work / "results/runs/s/long"
    job_id = None
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not (run / "checkpoints" / "last.ckpt").exists():
            assert proc.poll() is None, (work / "snakemake.out").read_text()
            time.sleep(0.5)
        assert (run / "checkpoints" / "last.ckpt").exists()
        running = []
        deadline = time.time() + 20  # slurmdbd's accounting may lag the job's start by seconds
        while time.time() < deadline and not running:
            running = [r for r in sacct("JobID", "State") if r[1] == "RUNNING"]
            time.sleep(0.2)
        [(job_id, state)] = running
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        # the trainer's own report of where it stopped; the requeued job's Snakemake recreates
        # the rule's log, so read it before the job restarts (SLURM waits ~10 s to restart it)
        train_log = work / "results/logs/train/s/long.log"
        stopped = []
        deadline = time.time() + 60
        while time.time() < deadline and not stopped:
            text = train_log.read_text() if train_log.exists() else ""
            stopped = [line for line in text.splitlines() if "stopped by signal" in line]
            time.sleep(0.2)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.terminate()
    out = (work / "snakemake.out").read_text()
    assert proc.returncode == 0, out
    log = next((work / "results/logs/slurm/long").glob(f"{job_id}_0_log.out")).read_text()
    assert "command stopped" in log and "Requeued job" in log, log
    assert log.count("[umup-slurm] long [long] job") == 2  # two starts of the same SLURM job
    assert stopped and "resuming from" in train_log.read_text(), train_log.read_text()
    summary = json.loads((run / "summary.json").read_text())
    reference = json.loads((ref / "run" / "summary.json").read_text())
    assert summary["attempts"] == 2 and summary["steps_done"] == 3000
    assert summary["final_train_loss"] == reference["final_train_loss"]
    assert summary["final_val_loss"] == reference["final_val_loss"]
    assert (run / "metrics.csv").read_bytes() == (ref / "run" / "metrics.csv").read_bytes()
    assert (run / "rms.csv").read_bytes() == (ref / "run" / "rms.csv").read_bytes()
    print(
        f"\n[slurm] SLURM job {job_id}: {stopped[0].strip()}; requeued, resumed, final train loss"
        f" {summary['final_train_loss']} == {reference['final_train_loss']} (uninterrupted)"
    )


# table columns that say how fast and where a run went, not what it computed
TIMING_COLUMNS = ["wall_seconds", "train_seconds", "tokens_per_second", "mfu"]


@pytest.mark.long  # ≈ 3 min beside the 7-min local smoke run; the packing test covers the profile on every CI run
def test_smoke_figure_with_profile_slurm_matches_the_local_run(smoke_local, cluster_env, shim_path, tmp_path):
    """The user's per-figure command, `snakemake --profile slurm figures/<name>.pdf`, from a copy of
    the repository root, adapted to the test cluster only through UMUP_SLURM_* (partition, account,
    QoS, interval). The figure is `smoke`'s search figure: plain cells (random search), cells
    shared with another sweep (trained in the first, copied here) and a staged search whose later
    stages a checkpoint adds while SLURM jobs are in flight. `all` runs the same rules over three
    times the cells: 634 s on CI's 2 CPUs, which CI's 30 minutes do not hold beside the local
    smoke run (that run builds every rule)."""
    root = workflow_copy(tmp_path / "wf")
    targets = ["figures/search_strategies.pdf"]
    started = time.time()
    proc = run_workflow(root, "--profile", "slurm", *targets, "--config", "preset=smoke", env=cluster_env, timeout=900)
    elapsed = time.time() - started
    out = proc.stdout + proc.stderr
    local = smoke_local["root"]

    # the same tables, value for value (timings aside), and the same figures
    def csvs(base):
        return sorted(p.relative_to(base) for p in (base / "results" / "tables").rglob("*.csv"))

    made = csvs(root)
    expected = {
        Path("results/tables") / rel
        for rel in ("search_random.csv", "search_staged.csv", "figures/search_strategies.csv")
    }
    assert expected <= set(made) and set(made) <= set(csvs(local)), made
    for rel in made:
        want, got = pd.read_csv(local / rel), pd.read_csv(root / rel)
        drop = [c for c in TIMING_COLUMNS if c in want.columns]
        pd.testing.assert_frame_equal(got.drop(columns=drop), want.drop(columns=drop), check_exact=True, obj=str(rel))
    figures = sorted(p.name for p in (root / "figures").iterdir())
    assert figures == ["search_strategies.pdf", "search_strategies.png"]
    assert all((root / "figures" / name).stat().st_size > 5_000 for name in figures)
    staged = pd.read_csv(root / "results" / "tables" / "search_staged.csv")
    assert set(staged["search.stage"]) == {"lr", "hp", "combined"}  # the checkpoint's stages ran on SLURM

    # every non-local job was one SLURM job, named by its cell, logged under results/logs/slurm/
    # (counted as executed: the checkpoint adds jobs after the first 'Job stats' table)
    counts = executed_jobs(out)
    remote = counts["train_cell"]
    logs = sorted((root / "results" / "logs" / "slurm").glob("*/*_0_log.out"))
    assert len(logs) == remote, (counts, logs)
    cells = {p.parent.name for p in logs}
    summaries = {p.parent.name for p in (root / "results" / "runs").glob("*/*/summary.json")}
    assert summaries <= cells
    job_ids = [p.name.split("_")[0] for p in logs]
    states = sacct("JobID", "JobName", "State", "AllocTRES", jobs=job_ids)
    assert len(states) == remote and all(s[2] == "COMPLETED" for s in states), states
    assert {s[1] for s in states} == cells

    # status: one sacct call per interval for all jobs in flight; sbatch once per job; no squeue
    _, logged = shim_path
    logged = logged()
    calls = {name: sum(1 for c in logged if c[0] == name) for name in ("sbatch", "sacct", "squeue")}
    jobs_per_sacct = [c[1].count("-j ") for c in logged if c[0] == "sacct"]
    print(
        f"\n[slurm] smoke search figure with --profile slurm: {elapsed:.0f} s (local {smoke_local['seconds']:.0f} s),"
        f" {remote} SLURM jobs; scheduler calls {calls}; jobs per sacct call: max"
        f" {max(jobs_per_sacct)}, mean {sum(jobs_per_sacct) / len(jobs_per_sacct):.1f}"
        f" (one query per job per poll would have been {sum(jobs_per_sacct)} sacct calls)"
    )
    assert calls["sbatch"] == remote and calls["squeue"] == 0
    assert calls["sacct"] <= elapsed / 2 + 5  # UMUP_SLURM_STATUS_INTERVAL=2 s
    # each query covered many jobs in flight; polling per job would have cost sum(jobs_per_sacct)
    assert max(jobs_per_sacct) > 2 and sum(jobs_per_sacct) / len(jobs_per_sacct) >= 5


def test_cell_resources_gpus_and_flops_scaled_time_limits_reach_sbatch(cluster_env, tmp_path):
    """A sweep's own `resources` (one GPU, less memory) override the preset's; the time limit is
    scaled from each cell's FLOPs; a cell trained in another sweep is only copied, by a 1-CPU job
    without GPU. All of it lands in the sbatch script and in SLURM's allocation."""
    root = workflow_copy(tmp_path / "wf")
    preset = yaml.safe_load((root / "config" / "presets" / "smoke.yaml").read_text())
    # a very slow "GPU" (10 MFLOP/s) so that the FLOPs, not the floor, set the time limit
    preset["compute"] = {"gpu_peak_flops": 1e7, "utilisation": 1.0, "min_runtime_min": 1, "runtime_safety": 1.0}
    preset["sweeps"]["gpu_probe"] = {
        "resources": {"gpus": 1, "mem_mb": 1500},
        "blocks": [
            {"set": {"parametrization": "umup", "model.width": 48}, "grid": {"train.steps": [10, 30]}},
            {"set": {"parametrization": "umup", "train.lr": 0.5}},
        ],  # = a cell of lr_width
    }
    (root / "config" / "presets" / "smoke_gpu.yaml").write_text(yaml.safe_dump(preset))
    run_workflow(
        root,
        "--profile",
        "slurm",
        "results/tables/gpu_probe.csv",
        "--config",
        "preset=smoke_gpu",
        env=cluster_env,
        timeout=600,
    )

    expanded = grid.expand_preset(preset)
    trained_elsewhere = {c.id for s, cells in expanded.items() if s != "gpu_probe" for c in cells}
    probe = expanded["gpu_probe"]
    copied = [c for c in probe if c.id in trained_elsewhere]
    assert len(probe) == 3 and len(copied) == 1
    limits = {}
    for c in probe:
        # by job id as a number: "1002_submission.sh" sorts before "998_submission.sh" as text
        scripts = sorted(
            (root / "results" / "logs" / "slurm" / c.id).glob("*_submission.sh"),
            key=lambda p: int(p.name.split("_")[0]),
        )
        script = scripts[-1]  # the copied cell: its training job (lr_width), then its copy job
        lines = set(script.read_text().splitlines())
        if c in copied:
            expected = ["#SBATCH --time=5", "#SBATCH --mem=1000M", "#SBATCH --cpus-per-task=1"]
            assert not any(line.startswith(("#SBATCH --gpus", "#SBATCH --gres")) for line in lines), script.read_text()
        else:
            limits[c.config.train.steps] = budget.runtime_minutes(c, preset["compute"])
            expected = [
                "#SBATCH --gpus-per-node=1",
                "#SBATCH --mem=1500M",
                "#SBATCH --cpus-per-task=1",
                f"#SBATCH --time={limits[c.config.train.steps]}",
            ]
        expected += [
            "#SBATCH --partition=debug",
            "#SBATCH --account=ci_acct",
            "#SBATCH --qos=ci_qos",
            f"#SBATCH --job-name={c.id}",
            "#SBATCH --signal=USR2@20",
        ]
        for line in expected:
            assert line in lines, (c.id, line, script.read_text())
        job_id = script.name.split("_")[0]
        [(tres, limit, state)] = sacct("AllocTRES", "TimelimitRaw", "State", jobs=[job_id])
        assert state == "COMPLETED" and ("gres/gpu=1" in tres) == (c not in copied), (c.id, tres)
        assert f"--time={limit}" in script.read_text()
    assert limits[30] > limits[10] > 1, limits  # three times the tokens, a longer limit
    print(f"\n[slurm] FLOPs-scaled time limits (minutes at 10 MFLOP/s) by steps: {limits}")


def test_failing_sacct_falls_back_to_the_controller_within_bounded_time(cluster_env, tmp_path):
    """The accounting database is down (a failing `sacct` first on PATH): after the retries the
    driver asks squeue/scontrol, says so naming sacct, and the workflow finishes; it never hangs."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sacct").write_text(
        "#!/bin/sh\necho 'sacct: error: Problem talking to the database: Connection refused' >&2\nexit 1\n"
    )
    (broken / "sacct").chmod(0o755)
    env = {**cluster_env, "PATH": f"{broken}:{cluster_env['PATH']}", "UMUP_SLURM_STATUS_RETRIES": "3"}
    started = time.monotonic()
    code, out = on_cluster(tmp_path / "wf", {"one": cell("s", steps=5)}, env, timeout=300)
    elapsed = time.monotonic() - started
    assert code == 0, out[-3000:]
    assert "sacct failed 3 times in a row" in out and "Connection refused" in out
    assert "asking squeue/scontrol" in out
    assert (tmp_path / "wf/results/runs/s/one/summary.json").exists()
    # bound: 3 status intervals of 2 s plus the job itself (a 5-step cell); 300 s would be a hang
    assert elapsed < 240
    print(f"\n[slurm] failing sacct: fell back to squeue/scontrol, workflow done in {elapsed:.0f} s")


def test_failing_sacct_without_fallback_fails_the_job_naming_sacct(cluster_env, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sacct").write_text("#!/bin/sh\necho 'sacct: error: slurmdbd down' >&2\nexit 1\n")
    (broken / "sacct").chmod(0o755)
    env = {**cluster_env, "PATH": f"{broken}:{cluster_env['PATH']}", "UMUP_SLURM_STATUS_RETRIES": "2"}
    started = time.monotonic()
    code, out = on_cluster(
        tmp_path / "wf",
        {"one": cell("s", steps=5)},
        env,
        "--retries",
        "0",
        "--submitit-status-fallback",
        "fail",
        timeout=300,
    )
    elapsed = time.monotonic() - started
    assert code != 0
    assert "sacct failed 2 times in a row" in out and "slurmdbd down" in out
    assert elapsed < 120
    subprocess.run(["scancel", "--name", "one"], check=False)
