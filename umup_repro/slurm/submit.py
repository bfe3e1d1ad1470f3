"""SLURM through submitit: resource mapping, submission, requeue on preemption or time limit.

The Snakemake executor plugin `snakemake_executor_plugin_submitit` (profile `slurm/`) uses this
module; it holds no Snakemake code, so it can be tested and used on its own.

- `submitit_parameters(resources, ...)` maps a Snakemake job's resources (`runtime` minutes,
  `mem_mb`, `gpus`, `cpus_per_task`, `slurm_partition`, `slurm_account`, `slurm_qos`,
  `slurm_constraint`) to `submitit.SlurmExecutor` parameters; partition, account, QoS and
  constraint fall back to `$UMUP_SLURM_PARTITION`, `$UMUP_SLURM_ACCOUNT`, `$UMUP_SLURM_QOS`,
  `$UMUP_SLURM_CONSTRAINT`, then to the plugin's settings.
- `sbatch_script(parameters, folder)` renders the sbatch file submitit will submit.
- `ShellCommand` is the callable each SLURM job runs: a shell command (for Snakemake, the
  `python -m snakemake --mode remote ...` line of one job or group job) in its own process
  group. It is a `submitit.helpers.Checkpointable`: on USR2 (time limit, preemption, or
  `scancel --signal=USR2`) submitit calls `checkpoint()`, which forwards SIGTERM to the whole
  process group, waits until every process in it has exited (`umup-repro train` saves a
  checkpoint at the end of the current step and exits 128 + signal), and returns itself as a
  `DelayedSubmission`; submitit then runs `scontrol requeue`, the job starts again under the same
  id, reruns the command and the cell resumes from its checkpoint.
- `submit(command, folder, parameters)` submits one `ShellCommand` and returns the submitit job;
  `job_state(job_id)`/`update_states()` read states from submitit's shared watcher, which asks
  `sacct` once for every job still in flight (never one query per job). The executor plugin uses
  `umup_repro.slurm.status` instead, which bounds what a failing `sacct` can do.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm import slurm as _slurm

ENV_DEFAULTS = {
    "partition": "UMUP_SLURM_PARTITION",
    "account": "UMUP_SLURM_ACCOUNT",
    "qos": "UMUP_SLURM_QOS",
    "constraint": "UMUP_SLURM_CONSTRAINT",
}
# states after which a job never runs again (everything else: queued, running, requeued)
TERMINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "REVOKED",
}


class SlurmError(RuntimeError):
    """A job command that exited with a non-zero code (not because it was asked to stop)."""


def _int(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(math.ceil(float(value)))
    except (TypeError, ValueError):
        raise ValueError(f"resource {name}={value!r} is not a number") from None


def submitit_parameters(
    resources: Mapping[str, Any],
    *,
    job_name: str,
    defaults: Mapping[str, Any] | None = None,
    threads: int | None = None,
    signal_delay_s: int = 120,
    environ: Mapping[str, str] | None = None,
    setup: Sequence[str] | None = None,
) -> dict:
    """`submitit.SlurmExecutor` parameters for one job from its Snakemake resources.

    `resources`: `runtime` (minutes; the time limit), `mem_mb` (or `mem_mb_per_cpu`), `gpus`
    (per node), `nodes` and `tasks_per_node` (a distributed cell: the allocation holds one task
    per device, submitit's own step one task, and the job's command `srun`s the ranks),
    `cpus_per_task` (else `threads`, else `_cores`), `slurm_partition`,
    `slurm_account`, `slurm_qos`, `slurm_constraint`, `slurm_extra` (a dict of further sbatch
    options or a string `key=value,...`). A missing partition, account, QoS or constraint comes from
    `$UMUP_SLURM_<NAME>`, then from `defaults` (the plugin settings); absent everywhere, sbatch
    uses the cluster's default. `setup`: shell lines the sbatch script runs before the job (site
    set-up: `module load ...`, activating an environment).
    """
    environ = os.environ if environ is None else environ
    defaults = defaults or {}
    params: dict[str, Any] = {
        "job_name": job_name,
        "nodes": 1,
        "ntasks_per_node": 1,
        "stderr_to_stdout": True,
        "signal_delay_s": int(signal_delay_s),
    }
    runtime = _int(resources.get("runtime"), "runtime")
    if runtime is not None:
        params["time"] = max(1, runtime)
    cpus = _int(resources.get("cpus_per_task"), "cpus_per_task")
    if cpus is None:
        cpus = threads if threads else _int(resources.get("_cores"), "_cores")
    if cpus:
        params["cpus_per_task"] = max(1, cpus)
    mem_per_cpu = _int(resources.get("mem_mb_per_cpu"), "mem_mb_per_cpu")
    mem = _int(resources.get("mem_mb"), "mem_mb")
    if mem_per_cpu:
        params["mem_per_cpu"] = f"{mem_per_cpu}M"
    elif mem:
        params["mem"] = f"{mem}M"
    gpus = _int(resources.get("gpus", resources.get("gpu")), "gpus")
    if gpus:
        params["gpus_per_node"] = gpus
    nodes = _int(resources.get("nodes"), "nodes") or 1
    tasks = _int(resources.get("tasks_per_node"), "tasks_per_node") or 1
    if nodes * tasks > 1:  # a distributed cell: the job step launches its ranks itself (`srun`, sweeps.smk)
        params.update(nodes=nodes, ntasks_per_node=tasks, srun_args=["--nodes=1", "--ntasks=1"])
    for key in ("partition", "account", "qos", "constraint"):
        value = resources.get(f"slurm_{key}") or environ.get(ENV_DEFAULTS[key]) or defaults.get(key)
        if value:
            params[key] = str(value)
    extra = resources.get("slurm_extra")
    if extra:
        if isinstance(extra, str):
            extra = dict(item.split("=", 1) for item in extra.split(",") if item.strip())
        params["additional_parameters"] = {str(k).strip(): v for k, v in dict(extra).items()}
    if setup:
        params["setup"] = [str(line) for line in setup]
    return params


def _executor(folder: Path | str, parameters: Mapping[str, Any], max_num_timeout: int = 3):
    executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=max_num_timeout)
    executor.update_parameters(**dict(parameters))
    return executor


def sbatch_script(parameters: Mapping[str, Any], folder: Path | str = "results/logs/slurm/job") -> str:
    """The sbatch file submitit writes for these parameters (what `sbatch` receives)."""
    params = dict(parameters)
    return _slurm._make_sbatch_string(
        command=f"{sys.executable} -u -m submitit.core._submit {folder}", folder=folder, **params
    )


def submit(
    command: str,
    folder: Path | str,
    parameters: Mapping[str, Any],
    *,
    label: str = "",
    cwd: str | None = None,
    max_num_timeout: int = 3,
):
    """Submit `command` (a shell line) as one SLURM job through submitit; returns the job.
    Its stdout and stderr (and the command's) go to `folder/<jobid>_0_log.out`."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    grace = max(5, int(parameters.get("signal_delay_s", 120)) - 10)
    func = ShellCommand(command, cwd=cwd or os.getcwd(), label=label, grace_s=grace)
    return _executor(folder, parameters, max_num_timeout).submit(func)


def log_path(job) -> Path:
    """The log of a submitit job (stdout and stderr together)."""
    return Path(str(job.paths.stdout).replace("%t", "0"))


def tail(path: Path | str, lines: int = 40) -> str:
    """The last `lines` lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# ---- job states: one sacct call for all jobs in flight ----------------------------------------


def watcher():
    """submitit's shared SLURM watcher (one per process)."""
    return _slurm.SlurmJob.watcher


def update_states() -> int:
    """Ask `sacct` once about every registered job that has not finished; returns the number of
    scheduler calls made so far by this process."""
    w = watcher()
    w.update()
    return w.num_calls


def job_state(job_id: str) -> str:
    """The last known state of a job (no scheduler call): e.g. PENDING, RUNNING, REQUEUED,
    COMPLETED, FAILED, CANCELLED (without 'by <uid>'), UNKNOWN before sacct knows the job."""
    state = watcher().get_state(str(job_id), mode="cache")
    return (state or "UNKNOWN").split()[0].upper()


def is_terminal(state: str) -> bool:
    return state.split()[0].upper() in TERMINAL_STATES


# ---- the callable each SLURM job runs ---------------------------------------------------------


def _become_subreaper() -> None:
    """Orphaned grandchildren (e.g. a trainer whose Snakemake parent died of the signal) are
    re-parented to us, so we can reap them and know when they are gone (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _group_alive(pgid: int) -> bool:
    """Whether any process (not a zombie) is left in process group `pgid`."""
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
                return True
        return False
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class ShellCommand(submitit.helpers.Checkpointable):
    """Run a shell command in its own process group; on preemption or time limit, stop it
    gracefully (SIGTERM to the group, wait up to `grace_s`, then SIGKILL) and requeue."""

    def __init__(self, command: str, cwd: str, label: str = "", grace_s: int = 60) -> None:
        self.command = command
        self.cwd = cwd
        self.label = label
        self.grace_s = grace_s
        self.attempt = 0
        self._proc: subprocess.Popen | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_proc"] = None
        return state

    def __call__(self) -> int:
        self.attempt += 1
        _become_subreaper()
        env = submitit.JobEnvironment()
        print(
            f"[umup-slurm] {self.label} job {env.job_id} start {self.attempt} on {env.hostname}"
            f" at {time.strftime('%Y-%m-%d %H:%M:%S')}",
            flush=True,
        )
        print(f"[umup-slurm] command: {self.command}", flush=True)
        self._proc = subprocess.Popen(
            self.command, shell=True, cwd=self.cwd, start_new_session=True, executable="/bin/bash"
        )
        code = self._proc.wait()
        self._wait_group(self._proc.pid, self.grace_s)
        print(f"[umup-slurm] command exited with {code}", flush=True)
        if code != 0:
            raise SlurmError(f"{self.label}: command exited with code {code}")
        return code

    def _wait_group(self, pgid: int, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            _reap()
            if not _group_alive(pgid):
                return True
            time.sleep(0.2)
        return False

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        proc = self._proc
        if proc is not None:
            print(
                f"[umup-slurm] stop requested: SIGTERM to process group {proc.pid}, waiting up to"
                f" {self.grace_s}s for a checkpoint",
                flush=True,
            )
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not self._wait_group(proc.pid, self.grace_s):
                print("[umup-slurm] still running after the grace period: SIGKILL", flush=True)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._wait_group(proc.pid, 10)
            code = proc.poll()
            print(f"[umup-slurm] command stopped ({code}); requeueing", flush=True)
        self._proc = None
        return submitit.helpers.DelayedSubmission(self)


_SAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def safe_name(text: str, limit: int = 120) -> str:
    """A file-name-safe version of a job label."""
    return _SAFE.sub("_", text).strip("_")[:limit] or "job"
