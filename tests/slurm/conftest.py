"""The `slurm` tests run against a real single-node SLURM cluster (slurmctld, slurmd, slurmdbd,
MariaDB, munge) that tests/slurm/setup_cluster.sh installs and starts; no mocks.

Without root or apt the tests are skipped, unless the environment variable CI is set: then they
fail. The cluster is left running (the set-up returns at once the next time);
tests/slurm/teardown_cluster.sh stops it.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SHIMMED = ("sacct", "squeue", "sbatch", "scontrol", "scancel", "sinfo")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slurm)


def _unavailable(reason):
    if os.environ.get("CI"):
        pytest.fail(f"SLURM test cluster unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"SLURM test cluster unavailable: {reason}")


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start (or find running) the single-node cluster; returns the set-up's output."""
    if os.name != "posix" or os.geteuid() != 0:
        _unavailable("needs root to install and start slurmctld/slurmd")
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        _unavailable("no apt-get to install slurm-wlm")
    proc = subprocess.run(["bash", str(HERE / "setup_cluster.sh")], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        message = f"setup_cluster.sh exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        if os.environ.get("CI") or proc.returncode != 3:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return proc.stdout


@pytest.fixture
def shim_path(tmp_path):
    """A PATH folder whose sacct/squeue/sbatch/... log each call to calls.log, then run the real
    command. Returns (folder, function returning the logged calls)."""
    folder = tmp_path / "shims"
    folder.mkdir()
    log = tmp_path / "calls.log"
    for name in SHIMMED:
        real = shutil.which(name)
        if real is None:
            continue
        script = folder / name
        script.write_text(f'#!/bin/sh\necho "$(date +%s.%N) {name} $*" >> {log}\nexec {real} "$@"\n')
        script.chmod(0o755)

    def calls():
        if not log.exists():
            return []
        return [line.split(" ", 2)[1:] for line in log.read_text().splitlines()]

    return folder, calls


@pytest.fixture
def cluster_env(slurm_cluster, shim_path):
    """Environment for `snakemake --profile slurm` against the test cluster: the site defaults
    through UMUP_SLURM_*, a short status interval, the counting shims first on PATH."""
    folder, _ = shim_path
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{folder}:{env['PATH']}",
            "UMUP_SLURM_PARTITION": "debug",
            "UMUP_SLURM_ACCOUNT": "ci_acct",
            "UMUP_SLURM_QOS": "ci_qos",
            "UMUP_SLURM_STATUS_INTERVAL": "2",
            "UMUP_SLURM_SIGNAL_DELAY_S": "20",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
    )
    return env
