"""Installs anywhere it claims: a non-editable wheel finds its presets and schema, and
environment.yml pins what pyproject.toml pins."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject(path: Path = ROOT / "pyproject.toml") -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def test_environment_yml_pins_equal_pyproject():
    project = _pyproject()["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pinned = [p for p in pip if not p.startswith(("-e", "./"))]  # the two local packages
    assert pinned == project["dependencies"] + project["optional-dependencies"]["test"]
    assert f"python{project['requires-python']}" in env["dependencies"]
    assert {"-e .", "./plugins/submitit"} <= set(pip)


def test_python_floor_and_license():
    project = _pyproject()["project"]
    assert project["requires-python"] == ">=3.11"  # Snakemake 9's floor
    assert project["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    plugin = _pyproject(ROOT / "plugins/submitit/pyproject.toml")["project"]
    assert plugin["name"] == "snakemake-executor-plugin-submitit"
    # the interfaces the plugin is written against are pinned to one major version
    assert any(re.fullmatch(r"snakemake-interface-executor-plugins>=[\d.]+,<\d+", d) for d in plugin["dependencies"])
    assert any(re.fullmatch(r"submitit>=[\d.]+,<[\d.]+", d) for d in plugin["dependencies"])


def _env() -> dict:
    """No PYTHONPATH: the installed wheel's code, never the checkout's."""
    return {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A fresh venv holding only the umup-repro wheel (--no-deps); the dependencies come from this
    interpreter's site-packages through a .pth line (no network needed)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # a clean copy: no build/ or egg-info of earlier builds can leak into the wheel
    src = tmp / "src"
    skip = {".git", ".venv", "build", "results", "figures", ".snakemake"}

    def ignore(folder, names):
        return [
            n for n in names if (Path(folder) == ROOT and n in skip) or n.endswith(".egg-info") or n == "__pycache__"
        ]

    shutil.copytree(ROOT, src, symlinks=True, ignore=ignore)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(src)]
    try:  # a recent enough setuptools here: build without network; else pip fetches it (CI has PyPI)
        import setuptools

        if int(setuptools.__version__.split(".")[0]) >= 77:  # pyproject's build-system floor
            build.insert(4, "--no-build-isolation")
    except ImportError:
        pass
    subprocess.run(build, check=True, timeout=600, env=_env())
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = Path(
        subprocess.run(
            [venv / "bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    wheel = next((tmp / "dist").glob("umup_repro-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        timeout=600,
        env=_env(),
    )
    # after the install: pip would otherwise see this environment's (editable) umup-repro as installed
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def _run(venv: Path, args: list[str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin/umup-repro"), *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        input=stdin,
        timeout=600,
    )


def test_wheel_runs_from_the_repository_root(wheel_venv, tmp_path):
    where = _run(wheel_venv, ["--version"], ROOT)
    code = subprocess.run(
        [str(wheel_venv / "bin/python"), "-c", "import umup_repro; print(umup_repro.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert str(wheel_venv) in code.stdout, code.stdout + code.stderr  # really the installed copy
    assert where.returncode == 0, where.stderr
    cells = _run(wheel_venv, ["cells", "--preset", "tiny"], ROOT)
    assert cells.returncode == 0, cells.stderr
    assert "preset tiny:" in cells.stdout
    train = _run(
        wheel_venv,
        ["train", "-", "--set", "train.steps=5", "--set", "model.width=64", "--out", str(tmp_path / "run")],
        ROOT,
        stdin="{}",
    )
    assert train.returncode == 0, train.stderr[-3000:]
    assert (tmp_path / "run" / "summary.json").is_file()


def test_wheel_finds_presets_and_schema_outside_a_checkout(wheel_venv, tmp_path):
    """No config/ in the working directory: the presets, config.yaml and the schema are package data."""
    cells = _run(wheel_venv, ["cells"], tmp_path)
    assert cells.returncode == 0, cells.stderr
    assert "preset tiny:" in cells.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults: {}\nsweeps: 3\n")
    refused = _run(wheel_venv, ["cells", "--preset", str(bad)], tmp_path)
    assert refused.returncode == 2 and "sweeps" in refused.stderr  # the schema was found and applied
