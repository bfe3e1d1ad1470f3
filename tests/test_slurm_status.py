"""A failing `sacct` never leaves the driver waiting: retries, then squeue/scontrol, else a lost job
whose reason names sacct. Fake SLURM commands on PATH (the real cluster: tests/slurm)."""

import os
import stat

import pytest

from umup_repro.slurm.status import LOST, JobStates


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sacct always fails; squeue lists job 11 as RUNNING; scontrol knows 12 as COMPLETED only."""
    scripts = {
        "sacct": "echo 'sacct: error: Problem talking to the database: Connection refused' >&2; exit 1",
        "squeue": "echo '11|RUNNING'",
        "scontrol": 'if [ "$3" = 12 ]; then echo "JobId=12 JobName=x JobState=COMPLETED Reason=None"; '
        'else echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1; fi',
    }
    for name, body in scripts.items():
        path = tmp_path / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


def test_after_the_retries_the_controller_answers_and_unknown_jobs_are_lost(fake_slurm):
    logged = []
    states = JobStates(retries=3, timeout_s=10, log=logged.append)
    for _ in range(2):
        states.update(["11", "12", "13"])
        assert {states.state(j) for j in ("11", "12", "13")} == {"UNKNOWN"}  # still retrying sacct
    states.update(["11", "12", "13"])  # third failure: the fallback
    assert (states.state("11"), states.state("12"), states.state("13")) == ("RUNNING", "COMPLETED", LOST)
    assert "sacct failed 3 times in a row" in states.reason("13") and "Connection refused" in states.reason("13")
    assert any("asking squeue/scontrol" in line for line in logged)
    assert all("sacct" in line for line in logged)


def test_without_the_fallback_the_jobs_fail_naming_sacct(fake_slurm):
    states = JobStates(retries=2, fallback=False, timeout_s=10, log=lambda _: None)
    states.update(["11"])
    assert states.state("11") == "UNKNOWN"
    states.update(["11"])
    assert states.state("11") == LOST and states.reason("11").startswith("sacct failed 2 times in a row")


def test_site_setup_lines_reach_the_sbatch_script():
    from umup_repro.slurm import submit as slurm

    params = slurm.submitit_parameters(
        {"runtime": 5}, job_name="x", setup=["module load cuda/12.4", "source /opt/venv/bin/activate"]
    )
    script = slurm.sbatch_script(params, "/tmp/logs")
    setup_at = script.index("module load cuda/12.4")
    assert script.index("source /opt/venv/bin/activate") > setup_at
    assert script.index("submitit.core._submit") > setup_at  # before the job's command
