"""Snakemake executor plugin `submitit`: every Snakemake job (or group job) is one SLURM job
submitted through submitit (`snakemake --executor submitit`, or `--profile slurm`).

One process, the Snakemake driver, owns all job state: Snakemake's retries, `--keep-going`,
groups and `--jobs` work as with any executor. Each job runs Snakemake's own job command
(`python -m snakemake --mode remote --target-jobs ...`) inside `umup_repro.slurm.submit.ShellCommand`, a
submitit Checkpointable: on preemption or the time limit it stops the command gracefully (the
trainer checkpoints) and submitit requeues the job, which resumes from the checkpoint. Status is
polled with one `sacct` call per interval for every job in flight (`umup_repro.slurm.status`);
when `sacct` fails `status-retries` times in a row the plugin asks `squeue`/`scontrol` instead,
and a job nobody can account for fails with a message naming `sacct`: the driver never waits
forever on a broken accounting database.

Settings (`--submitit-<name>` on the command line, `submitit-<name>:` in a profile):
logdir, partition, account, qos, constraint, signal-delay-s, max-requeues, group-cpus, cells-per-gpu,
log-tail-lines, setup, status-retries, status-fallback (squeue | fail), status-timeout-s.
Resources read from each job: runtime, mem_mb, mem_mb_per_cpu, gpus, cpus_per_task,
slurm_partition, slurm_account, slurm_qos, slurm_constraint, slurm_extra.
"""

import os
import subprocess
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Optional

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import CommonSettings, ExecutorSettingsBase

try:
    from umup_repro.slurm import submit as slurm
    from umup_repro.slurm.status import LOST, JobStates
except ModuleNotFoundError as err:  # not a declared dependency (see pyproject.toml): say what to install
    raise ImportError(
        "the submitit executor plugin needs umup-repro: `pip install -e . ./plugins/submitit` "
        "from the umup-repro checkout"
    ) from err


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    logdir: str = field(
        default="results/logs/slurm",
        metadata={"help": "Folder for the SLURM job logs, one sub-folder per cell (or group)."},
    )
    partition: Optional[str] = field(
        default=None,
        metadata={
            "help": "Default partition when a job sets no slurm_partition resource and $UMUP_SLURM_PARTITION is unset."
        },
    )
    account: Optional[str] = field(
        default=None,
        metadata={"help": "Default account (after slurm_account and $UMUP_SLURM_ACCOUNT)."},
    )
    qos: Optional[str] = field(
        default=None,
        metadata={"help": "Default QoS (after slurm_qos and $UMUP_SLURM_QOS)."},
    )
    constraint: Optional[str] = field(
        default=None,
        metadata={"help": "Default constraint (after slurm_constraint and $UMUP_SLURM_CONSTRAINT)."},
    )
    signal_delay_s: int = field(
        default=120,
        metadata={
            "help": "USR2 is sent this many seconds before the time limit; the job then "
            "checkpoints and is requeued. $UMUP_SLURM_SIGNAL_DELAY_S overrides."
        },
    )
    max_requeues: int = field(
        default=3,
        metadata={
            "help": "How many times a job may be requeued after hitting its time limit (preemptions do not count)."
        },
    )
    group_cpus: int = field(
        default=0,
        metadata={
            "help": "CPUs of a packed group job (0: Snakemake's sum over the members that "
            "can run at once). With a cap, the group runs cap/cpus-per-cell members at "
            "a time and its time limit, memory and GPUs are scaled to match. "
            "$UMUP_SLURM_GROUP_CPUS overrides."
        },
    )
    cells_per_gpu: int = field(
        default=1,
        metadata={
            "help": "Members of a packed group job that share one GPU (GPU packing: small cells "
            "leave a GPU mostly idle). The group asks for ceil(members at once x GPUs per member "
            "/ this) GPUs, which its members all see. $UMUP_SLURM_CELLS_PER_GPU overrides."
        },
    )
    log_tail_lines: int = field(
        default=40,
        metadata={"help": "Lines of a failed job's log shown in the error report."},
    )
    setup: Optional[str] = field(
        default=None,
        metadata={
            "help": "Site set-up: shell lines (newline-separated) each job script runs before the "
            "job, e.g. 'module load cuda/12.4' and activating the environment."
        },
    )
    status_retries: int = field(
        default=5,
        metadata={
            "help": "Failed `sacct` calls in a row before the status falls back to squeue/scontrol "
            "(or, without the fallback, the jobs in flight fail). $UMUP_SLURM_STATUS_RETRIES "
            "overrides."
        },
    )
    status_fallback: str = field(
        default="squeue",
        metadata={
            "help": "When sacct keeps failing: 'squeue' asks squeue/scontrol (slurmctld) for the states; "
            "'fail' fails the jobs in flight with a message naming sacct.",
            "choices": ["squeue", "fail"],
        },
    )
    status_timeout_s: int = field(
        default=60,
        metadata={"help": "Timeout of one sacct/squeue/scontrol call, in seconds."},
    )


common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    # sbatch exports the submitting environment (--export=ALL is SLURM's default)
    pass_envvar_declarations_to_cmd=False,
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=0,
    pass_group_args=True,
)


def _job_label(job: JobExecutorInterface) -> str:
    """Cell id for a cell job; '<group>-<8 hex>' for a group job; else rule + wildcards."""
    safe_name = slurm.safe_name
    if job.is_group():
        members = list(job.jobs)
        if len(members) == 1:
            return _job_label(members[0])
        return safe_name(f"group-{job.groupid}-{str(job.jobid)[:8]}")
    wildcards = dict(getattr(job, "wildcards_dict", {}) or {})
    if "cell" in wildcards:
        return safe_name(str(wildcards["cell"]))
    parts = [job.name] + [f"{v}" for _, v in sorted(wildcards.items())]
    return safe_name("-".join(parts))


class Executor(RemoteExecutor):
    def __post_init__(self):
        # (the status thread is already running: check_active_jobs must not need anything set here)
        settings = self.workflow.executor_settings
        self.settings = settings
        interval = os.environ.get("UMUP_SLURM_STATUS_INTERVAL")
        if interval:
            self.next_seconds_between_status_checks = float(interval)
        delay = os.environ.get("UMUP_SLURM_SIGNAL_DELAY_S")
        self.signal_delay_s = int(delay) if delay else int(settings.signal_delay_s)
        self.defaults = {k: getattr(settings, k) for k in ("partition", "account", "qos", "constraint")}
        self.setup = [line for line in (settings.setup or "").splitlines() if line.strip()]
        retries = int(os.environ.get("UMUP_SLURM_STATUS_RETRIES") or settings.status_retries)
        if settings.status_fallback not in ("squeue", "fail"):
            raise WorkflowError(f"--submitit-status-fallback: 'squeue' or 'fail', not {settings.status_fallback!r}")
        self.status = JobStates(
            retries=retries,
            fallback=settings.status_fallback == "squeue",
            timeout_s=float(settings.status_timeout_s),
            log=self.logger.warning,
        )
        self.logger.info(
            f"submitit executor: logs in {settings.logdir}, status every"
            f" {self.next_seconds_between_status_checks} s (one sacct call for all jobs)"
        )

    def _group_cap(self) -> int:
        return int(os.environ.get("UMUP_SLURM_GROUP_CPUS") or self.settings.group_cpus or 0)

    def _cells_per_gpu(self) -> int:
        return max(1, int(os.environ.get("UMUP_SLURM_CELLS_PER_GPU") or self.settings.cells_per_gpu or 1))

    def _resources_of(self, job: JobExecutorInterface) -> dict:
        """The job's resources; for a group under a CPU cap, sized for k members at a time; a
        group's GPUs shared by `cells_per_gpu` members each."""
        resources = dict(job.resources.items())
        if not job.is_group():
            return resources
        # Snakemake sums a group's resources, but a cell's node/task shape is not additive
        for key in ("nodes", "tasks_per_node"):
            resources[key] = max(int(dict(j.resources.items()).get(key) or 1) for j in job.jobs)
        members = [dict(j.resources.items()) for j in job.jobs]

        def most(key, default=0):
            return max(float(m.get(key) or default) for m in members)

        cap, share = self._group_cap(), self._cells_per_gpu()
        if cap:
            per_cell = max(1, int(most("cpus_per_task", 1) or most("_cores", 1)))
            k = max(1, min(len(members), cap // per_cell))
            resources.update(
                cpus_per_task=k * per_cell,
                _cores=k * per_cell,
                mem_mb=int(k * most("mem_mb")) or None,
                gpus=int(k * most("gpus")),
                runtime=int(-(-len(members) // k) * most("runtime")) or None,
            )
        if share > 1 and resources.get("gpus"):
            resources["gpus"] = max(1, -(-int(resources["gpus"]) // share))
        return resources

    # the job's command: Snakemake itself, in remote mode, with the job's cores
    @staticmethod
    def _cores_of(job: JobExecutorInterface, resources: dict) -> int:
        cpus = resources.get("cpus_per_task") or (None if job.is_group() else job.threads)
        cpus = cpus or resources.get("_cores") or 1
        return max(1, int(cpus))

    # The inner Snakemake must get the job's own CPUs as --cores, not the driver's. RemoteExecutor
    # reads `self.cores` while formatting a job's command and takes no per-job override, so
    # run_job sets the job being formatted and `cores` answers for it.
    _formatting_cores = None

    @property
    def cores(self):
        return self._formatting_cores if self._formatting_cores is not None else super().cores

    def _format_job_exec(self, job: JobExecutorInterface, cores: int) -> str:
        self._formatting_cores = cores
        try:
            return self.format_job_exec(job)
        finally:
            self._formatting_cores = None

    def run_job(self, job: JobExecutorInterface):
        label = _job_label(job)
        folder = os.path.join(self.settings.logdir, label)
        resources = self._resources_of(job)
        cores = self._cores_of(job, resources)
        try:
            params = slurm.submitit_parameters(
                resources,
                job_name=label,
                defaults=self.defaults,
                threads=cores,
                signal_delay_s=self.signal_delay_s,
                setup=self.setup,
            )
        except ValueError as err:
            raise WorkflowError(f"job {label}: {err}") from err
        command = self._format_job_exec(job, cores)
        members = ", ".join(sorted(_job_label(j) for j in job.jobs)) if job.is_group() else label
        try:
            sjob = slurm.submit(
                command,
                folder,
                params,
                label=f"{label} [{members}]",
                cwd=os.getcwd(),
                max_num_timeout=int(self.settings.max_requeues),
            )
        except Exception as err:  # sbatch refused the job
            raise WorkflowError(f"submitting {label} with submitit failed: {err}") from err
        log = slurm.log_path(sjob)
        self.logger.info(f"Job {job.jobid} ({label}) submitted as SLURM job {sjob.job_id}, log: {log}")
        self.report_job_submission(
            SubmittedJobInfo(
                job, external_jobid=str(sjob.job_id), aux={"submitit_job": sjob, "log": str(log), "label": label}
            )
        )

    async def check_active_jobs(self, active_jobs: list[SubmittedJobInfo]) -> AsyncGenerator[SubmittedJobInfo, None]:
        if active_jobs:
            async with self.status_rate_limiter:  # one sacct call for every job in flight
                self.status.update(info.external_jobid for info in active_jobs)
        for info in active_jobs:
            state = self.status.state(info.external_jobid)
            self.logger.debug(f"SLURM job {info.external_jobid} ({info.aux['label']}): {state}")
            if state == LOST:
                reason = self.status.reason(info.external_jobid)
                message = f"SLURM job {info.external_jobid} ({info.aux['label']}): {reason}"
                self.logger.error(message)
                self.report_job_error(info, msg=message, aux_logs=[info.aux["log"]])
                continue
            if not slurm.is_terminal(state):
                yield info
                continue
            if state == "COMPLETED":
                self.report_job_success(info)
                continue
            log = info.aux["log"]
            lines = int(self.settings.log_tail_lines)
            text = slurm.tail(log, lines)
            message = (
                f"SLURM job {info.external_jobid} ({info.aux['label']}) ended {state}. "
                f"Last {lines} lines of {log}:\n{text}\n"
            )
            jobs = list(info.job.jobs) if info.job.is_group() else [info.job]
            for rule_log in sorted({str(f) for j in jobs for f in j.log}):
                rule_tail = slurm.tail(rule_log, 15)
                if rule_tail:
                    message += f"Last 15 lines of the rule's log {rule_log}:\n{rule_tail}\n"
            self.logger.error(message)
            self.report_job_error(info, msg=message, aux_logs=[log])

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]):
        ids = [info.external_jobid for info in active_jobs]
        if ids:
            subprocess.run(["scancel", *ids], check=False)
