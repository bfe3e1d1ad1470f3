"""SLURM job states with bounded failure: `sacct` first, `squeue`/`scontrol` when it keeps failing.

submitit's watcher swallows a failing `sacct` (a warning, then the job stays UNKNOWN), so a
driver polling it waits forever when the accounting database is down. `JobStates` asks `sacct`
once for every job in flight (with a timeout); after `retries` failed calls in a row it asks the
controller instead (`squeue`, then `scontrol show job` for jobs squeue no longer lists), and a
job that neither knows is reported lost with the reason, naming `sacct`. Without the fallback
(`fallback=False`) the jobs in flight are failed after the retries, with the same message.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterable

from submitit.slurm.slurm import SlurmInfoWatcher

LOST = "LOST"  # our own state: nobody can tell what became of the job


def _run(command: list[str], timeout: float) -> tuple[bool, str]:
    """(succeeded, stdout or the reason it failed)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"`{' '.join(command[:1])}` timed out after {timeout:.0f} s"
    except OSError as err:
        return False, f"`{command[0]}` could not run: {err}"
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return False, f"`{command[0]}` exited {done.returncode}: {detail[0][:200]}"
    return True, done.stdout


class JobStates:
    """States of the jobs this driver submitted; `update(ids)` once per status interval."""

    def __init__(
        self, *, retries: int = 5, fallback: bool = True, timeout_s: float = 60.0, log: Callable[[str], None] = print
    ) -> None:
        self.retries, self.fallback, self.timeout_s, self.log = max(1, retries), fallback, timeout_s, log
        self.states: dict[str, str] = {}
        self.reasons: dict[str, str] = {}
        self.sacct_failures = 0  # in a row
        self.last_error = ""
        self._reader = SlurmInfoWatcher()  # only its parser of `sacct --parsable2` output

    # ---- queries ----

    def _sacct(self, ids: list[str]) -> dict[str, str] | None:
        command = ["sacct", "-o", "JobID,State", "--parsable2"] + [a for i in ids for a in ("-j", i)]
        ok, out = _run(command, self.timeout_s)
        if not ok:
            self.last_error = out
            return None
        return {jid: info.get("State", "UNKNOWN") for jid, info in self._reader.read_info(out).items()}

    def _controller(self, ids: list[str]) -> dict[str, str]:
        """States from slurmctld (no accounting database): squeue, then scontrol per missing job."""
        states: dict[str, str] = {}
        ok, out = _run(["squeue", "-h", "-o", "%i|%T", "-j", ",".join(ids)], self.timeout_s)
        if ok:
            for line in out.splitlines():
                jid, _, state = line.strip().partition("|")
                if jid in ids:
                    states[jid] = state
        for jid in (i for i in ids if i not in states):
            ok, out = _run(["scontrol", "show", "job", jid], self.timeout_s)
            match = re.search(r"JobState=(\S+)", out) if ok else None
            if match:
                states[jid] = match.group(1)
        return states

    # ---- the poll ----

    def update(self, job_ids: Iterable[str]) -> None:
        ids = sorted({str(i) for i in job_ids if self.states.get(str(i)) != LOST})
        if not ids:
            return
        found = self._sacct(ids)
        if found is not None:
            self.sacct_failures = 0
            self.states.update(found)
            return
        self.sacct_failures += 1
        if self.sacct_failures < self.retries:
            self.log(f"sacct failed ({self.sacct_failures} of {self.retries} tries in a row): {self.last_error}")
            return
        cause = f"sacct failed {self.sacct_failures} times in a row (last: {self.last_error})"
        if not self.fallback:
            for jid in ids:
                self._lose(jid, f"{cause}; no fallback query (status-fallback fail): giving up on the job")
            return
        self.log(f"{cause}; asking squeue/scontrol for {len(ids)} jobs instead")
        known = self._controller(ids)
        self.states.update(known)
        for jid in (i for i in ids if i not in known):
            self._lose(
                jid,
                f"{cause}, and neither squeue nor scontrol knows job {jid} any more:"
                " its end state cannot be read; treating it as failed",
            )

    def _lose(self, jid: str, reason: str) -> None:
        self.states[jid], self.reasons[jid] = LOST, reason

    def state(self, job_id: str) -> str:
        """PENDING, RUNNING, COMPLETED, ..., UNKNOWN (not yet known) or LOST (see `reason`)."""
        return (self.states.get(str(job_id)) or "UNKNOWN").split()[0].upper()

    def reason(self, job_id: str) -> str:
        return self.reasons.get(str(job_id), "")


def wait_bound_s(retries: int, interval_s: float, timeout_s: float) -> float:
    """The longest a job's state can stay unread when sacct keeps failing: `retries` polls, each
    at most one interval plus a sacct timeout, then the fallback's own queries."""
    return retries * (interval_s + timeout_s) + 2 * timeout_s
