"""Running the real Snakemake workflow in a scratch copy (shared by the DAG and SLURM tests)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def workflow_copy(dest: Path) -> Path:
    """The workflow's own files (Snakefile, rules, schema, presets, SLURM profile) in a fresh
    working directory, laid out as in the repository root."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", dest)
    for d in ("workflow", "config", "slurm"):
        shutil.copytree(REPO / d, dest / d)
    return dest


def snakemake(
    cwd: Path, *args: str, check: bool = True, env: dict | None = None, timeout: int = 1200
) -> subprocess.CompletedProcess:
    """`python -m snakemake ARGS` in `cwd` with this interpreter's `umup-repro` first on PATH."""
    env = dict(os.environ if env is None else env)
    env["MPLBACKEND"] = "Agg"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def fake_trainer_env(tmp_path: Path, script: str) -> dict:
    """The environment of a workflow run whose `umup-repro` is `script` (a fake trainer with a known
    loss surface, writing the run-folder contract; tests/ and the package importable), the real
    commands behind it on PATH."""
    import stat

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "umup-repro"
    fake.write_text(f"#!{sys.executable}\n{script}")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PATH"] = f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    return env


def snakemake_as_is(cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """`python -m snakemake ARGS` with `env` exactly (its PATH first: a fake trainer stays in front)."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run: {rule: count}."""
    counts = {}
    block = output.split("Job stats:", 1)[1] if "Job stats:" in output else ""
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    counts.pop("total", None)
    return counts


def executed_jobs(output: str) -> dict[str, int]:
    """The jobs a run actually executed, {rule: count}, from the `rule X:` header Snakemake prints
    before each job. Unlike the 'Job stats' table this counts the jobs a checkpoint (the staged
    search's stages) adds after the run began; checkpoints' jobs count too."""
    counts: dict[str, int] = {}
    for m in re.finditer(r"^(?:local)?(?:rule|checkpoint) (\S+):$", output, flags=re.MULTILINE):
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts
