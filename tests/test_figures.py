"""Figures from real tables: a session fixture trains ~90 tiny real cells (width 32/64, depth 1-2,
20 steps, in-process, ≈ 30 s on one core), assembles them into tables with the aggregate
contract's layout (docs/design.md, "Tables"; `results/tables/<sweep>.csv`, `metrics/<sweep>.csv`,
`rms/<sweep>.csv`), then draws every figure and checks each file and what each figure shows
against its table (the optimum per line is the table's argmin, diverged runs are counted, ...).
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from umup_repro.core.figure_catalog import FIGURES
from umup_repro.figures.lr_transfer import TRANSFER_AXES, transfer
from umup_repro.figures.plot import plot
from umup_repro.results.tables import load_table, prepare

BASE = {
    "model": {"width": 32, "head_dim": 16, "depth": 1, "seq_len": 32},
    "train": {"steps": 20, "batch_size": 4, "warmup": 5},
    "log": {"rms_every": 10, "val_every": 10},
}
LR = {"sp": 2.0**-9, "mup": 2.0**-8, "umup": 2.0**1}
HP_AXES = {
    "umup": {"hp.alpha_res": (0.5, 2.0), "hp.alpha_ffn_act": (0.5, 2.0)},
    "mup": {"hp.sigma_init": (2.0**-5, 2.0**-3), "hp.alpha_out": (0.5, 2.0)},
}
HP_DEFAULT = {"hp.alpha_res": 1.0, "hp.alpha_ffn_act": 1.0, "hp.sigma_init": 2.0**-4, "hp.alpha_out": 1.0}


def _cells() -> dict[str, list[tuple[dict, str, str]]]:
    """Each sweep's cells in run order: (flat overrides, search.kind, search.axis)."""
    sweeps: dict[str, list] = {}

    def grid(*cells):
        return [(c, "grid", "") for c in cells]

    lr_width = [
        {"parametrization": p, "model.width": w, "train.lr": LR[p] * f}
        for p in ("sp", "mup", "umup")
        for w in (32, 64)
        for f in (0.25, 1.0, 4.0)
    ]
    lr_width.append({"parametrization": "sp", "model.width": 64, "train.lr": 4.0})  # diverges
    sweeps["lr_width"] = grid(*lr_width)
    for name, key, values in (
        ("lr_depth", "model.depth", (1, 2)),
        ("lr_batch", "train.batch_size", (4, 8)),
        ("lr_steps", "train.steps", (10, 20)),
    ):
        sweeps[name] = grid(
            *[{"parametrization": "umup", key: v, "train.lr": LR["umup"] * f} for v in values for f in (0.25, 1.0)]
        )
    hp = []
    for p in ("mup", "umup"):
        for w in (32, 64):
            hp.append(({"parametrization": p, "model.width": w}, "independent", "base"))
            for key, values in HP_AXES[p].items():
                hp += [({"parametrization": p, "model.width": w, key: v}, "independent", key) for v in values]
    sweeps["hp_width"] = hp
    rng = random.Random(0)
    rand, indep = [], []
    for p in ("mup", "umup"):
        for _ in range(4):
            cell = {"parametrization": p, "train.lr": LR[p] * 2.0 ** rng.uniform(-3, 3)}
            cell.update({k: HP_DEFAULT[k] * 2.0 ** rng.uniform(-1, 1) for k in HP_AXES[p]})
            rand.append((cell, "random", ""))
        indep += [({"parametrization": p, "train.lr": LR[p] * f}, "independent", "train.lr") for f in (0.25, 1.0, 4.0)]
        for key, values in HP_AXES[p].items():
            indep += [({"parametrization": p, key: values[0]}, "independent", key)]
    sweeps["search_random"], sweeps["search_independent"] = rand, indep
    sweeps["embedding_lr"] = grid(
        *[
            {"parametrization": "umup", "train.emb_lr_rule": r, "model.width": w, "train.lr": LR["umup"] * f}
            for r in ("inv_sqrt_fan_out", "constant")
            for w in (32, 64)
            for f in (0.25, 1.0)
        ]
    )
    sweeps["rms"] = grid(
        *[
            {"parametrization": p, "model.width": w, "train.lr": LR.get(p, 2.0)}
            for p in ("mup", "umup", "umup_fp8")
            for w in (32, 64)
        ]
    )
    sweeps["fp8"] = grid(
        *[
            {"parametrization": p, "model.fp8": f, "train.lr": LR.get(p, 2.0)}
            for p, f in (("umup", False), ("umup_fp8", False), ("mup", False), ("mup", True))
        ]
    )
    return sweeps


def _nest(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        if "." in key:
            sec, sub = key.split(".", 1)
            out.setdefault(sec, {})[sub] = value
        else:
            out[key] = value
    return out


def build_tables(root: Path) -> Path:
    """Train every cell of `_cells()` under root/runs/<sweep>/<cell>; write root/tables."""
    from umup_repro.core.config import config_hash, resolve_config
    from umup_repro.data import token_arrays
    from umup_repro.training.train import run_cell

    tables = root / "tables"
    (tables / "metrics").mkdir(parents=True, exist_ok=True)
    (tables / "rms").mkdir(parents=True, exist_ok=True)
    tokens = None
    for sweep, cells in _cells().items():
        rows, metrics, rms = [], [], []
        for index, (flat, kind, axis) in enumerate(cells):
            over = _nest(flat)
            config = resolve_config(
                {**BASE, "parametrization": over.pop("parametrization")},
                **{k: v for k, v in flat.items() if k != "parametrization"},
            )
            tokens = tokens or token_arrays(config)
            cell = config_hash(config)
            folder = root / "runs" / sweep / cell
            run_cell(config, folder, sweep=sweep, progress="none", tokens=tokens)
            summary = json.loads((folder / "summary.json").read_text())
            summary = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
            rows.append(
                {
                    "cell": cell,
                    "sweep": sweep,
                    "search.kind": kind,
                    "search.index": index,
                    "search.axis": axis,
                    **summary,
                }
            )
            metrics.append(pd.read_csv(folder / "metrics.csv").assign(cell=cell))
            rms.append(pd.read_csv(folder / "rms.csv").assign(cell=cell))
        pd.DataFrame(rows).to_csv(tables / f"{sweep}.csv", index=False)
        pd.concat(metrics).to_csv(tables / "metrics" / f"{sweep}.csv", index=False)
        pd.concat(rms).to_csv(tables / "rms" / f"{sweep}.csv", index=False)
    return tables


@pytest.fixture(scope="session")
def tables(tmp_path_factory) -> Path:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return build_tables(tmp_path_factory.mktemp("figures"))


@pytest.fixture(scope="session")
def coord_tables(tmp_path_factory) -> Path:
    """Real coordinate-check tables of SP and u-μP (small: widths 32…128, 2 steps)."""
    from umup_repro.analyses.coord_check import run_coord_check

    root = tmp_path_factory.mktemp("coord") / "tables"
    for p in ("sp", "umup"):
        table = run_coord_check(
            p, [32, 64, 128], depth=1, steps=2, batch_size=2, seq_len=32, base={"model": {"head_dim": 16}}
        )
        (root / "coord_check" / p).mkdir(parents=True)
        table.to_csv(root / "coord_check" / p / "coord_check.csv", index=False)
    return root


def check_files(pdf: Path) -> None:
    """The PDF and its PNG exist and are not trivial: a PDF of some size, a PNG with ink."""
    from matplotlib.image import imread

    png = pdf.with_suffix(".png")
    assert pdf.exists() and png.exists()
    assert pdf.stat().st_size > 10_000, pdf
    img = imread(png)[..., :3]
    assert img.shape[0] > 300 and img.shape[1] > 300
    dark = (img.mean(axis=2) < 0.5).mean()
    assert 0.005 < dark < 0.5, f"{png}: {dark:.3%} dark pixels"
    assert img.std() > 0.05


def main_table(tables: Path, *sweeps: str) -> pd.DataFrame:
    return load_table(tables, sweeps)


def expected_optima(df: pd.DataFrame, panel: str, line: str, x: str) -> dict:
    """Per (panel, line): (x, loss) of the smallest non-diverged final_val_loss."""
    ok = df[~df["diverged"] & df["final_val_loss"].notna()]
    out = {}
    for (p, v), g in ok.groupby([panel, line]):
        best = g.loc[g["final_val_loss"].idxmin()]
        out[(p, float(v))] = (float(best[x]), float(best["final_val_loss"]))
    return out


@pytest.mark.parametrize("name", list(TRANSFER_AXES))
def test_transfer_marks_each_lines_argmin(tables, tmp_path, name):
    sweep = FIGURES[name].sweeps[0]
    axis = TRANSFER_AXES[name][0]
    df = main_table(tables, sweep)
    result = plot(name, tables, [sweep], tmp_path / f"{name}.pdf")
    check_files(tmp_path / f"{name}.pdf")
    expected = expected_optima(df, "variant", axis, "train.lr")
    got = {(r.panel, float(r.line)): (r.x_opt, r.loss_opt) for r in result.itertuples() if np.isfinite(r.loss_opt)}
    assert got.keys() == expected.keys()
    for key, (x, loss) in expected.items():
        assert got[key][0] == pytest.approx(x) and got[key][1] == pytest.approx(loss)
    # every cell is accounted for: runs per line sum to the table, diverged ones counted
    assert result["runs"].sum() == len(df)
    assert result["diverged"].sum() == df["diverged"].sum()
    assert set(result["panel"]) == set(df["variant"])
    # an optimum at its line's grid edge is a bound (drawn hollow), named as such; one inside is not
    for r in result.itertuples():
        grid = df[(df["variant"] == r.panel) & (df[axis] == r.line)]["train.lr"]
        if np.isfinite(r.x_opt):
            edge = {grid.min(): "lower", grid.max(): "upper"}.get(r.x_opt, "") if grid.nunique() > 1 else ""
            assert r.censored == edge, (r.panel, r.line, r.x_opt, sorted(grid))


def test_transfer_width_marks_the_diverged_sp_run(tables):
    df = main_table(tables, "lr_width")
    sp = df[(df["variant"] == "sp") & (df["train.lr"] == 4.0)]
    assert len(sp) == 1 and bool(sp["diverged"].iloc[0]), "the SP cell at η=4 is meant to diverge"
    result = transfer("transfer_width", df, tables.parent / "tw.pdf")
    row = result[(result["panel"] == "sp") & (result["line"] == 64)].iloc[0]
    assert row["diverged"] == 1 and row["x_opt"] != 4.0


def test_embedding_lr(tables, tmp_path):
    df = main_table(tables, "embedding_lr")
    result = plot("embedding_lr", tables, ["embedding_lr"], tmp_path / "e.pdf")
    check_files(tmp_path / "e.pdf")
    expected = expected_optima(df, "train.emb_lr_rule", "model.width", "train.lr")
    got = {(r.panel, float(r.line)): (r.x_opt, r.loss_opt) for r in result.itertuples()}
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key])
    assert set(result["panel"]) == {"inv_sqrt_fan_out", "constant"}


def test_hp_transfer_optimum_includes_the_base_point(tables, tmp_path):
    df = main_table(tables, "hp_width")
    result = plot("hp_transfer", tables, ["hp_width"], tmp_path / "hp.pdf")
    check_files(tmp_path / "hp.pdf")
    assert {(r.panel, r.hp) for r in result.itertuples()} == {(p, k) for p in HP_AXES for k in HP_AXES[p]}
    for r in result.itertuples():
        g = df[(df["variant"] == r.panel) & (df["model.width"] == r.line) & df["search.axis"].isin([r.hp, "base"])]
        ok = g[~g["diverged"]]
        assert r.runs == len(g) == 3  # base + two values
        best = ok.loc[ok["final_val_loss"].idxmin()]
        assert r.x_opt == pytest.approx(best[r.hp]) and r.loss_opt == pytest.approx(best["final_val_loss"])


def test_search_strategies_best_so_far(tables, tmp_path):
    df = main_table(tables, "search_random", "search_independent")
    curves = plot("search_strategies", tables, ["search_random", "search_independent"], tmp_path / "s.pdf")
    check_files(tmp_path / "s.pdf")
    for (v, s), g in df.groupby(["variant", "search.kind"]):
        c = curves[(curves["variant"] == v) & (curves["strategy"] == s)]
        assert len(c) == len(g)
        assert list(c["runs"]) == list(range(1, len(g) + 1))
        started = c["best_so_far"].dropna()  # NaN only before the first run that did not diverge
        assert c["best_so_far"].iloc[len(c) - len(started) :].notna().all()
        assert started.is_monotonic_decreasing
        ok = g[~g["diverged"]]["final_val_loss"]
        assert c["best_so_far"].iloc[-1] == pytest.approx(ok.min())
        first = g.sort_values("search.index").iloc[0]
        if not first["diverged"]:
            assert c["best_so_far"].iloc[0] == pytest.approx(first["final_val_loss"])


def test_rms_init(tables, tmp_path):
    data = plot("rms_init", tables, ["rms"], tmp_path / "ri.pdf")
    check_files(tmp_path / "ri.pdf")
    assert set(data["variant"]) == {"mup", "umup", "umup_fp8"}
    assert set(data["kind"]) == {"weight", "activation", "grad"}
    assert set(data["width"]) == {32, 64}
    # what the figure is for: u-μP weights sit at RMS ≈ 1 at init, μP's hidden weights far below
    raw = pd.read_csv(tables / "rms" / "rms.csv")
    main = main_table(tables, "rms")
    joined = raw[raw["step"] == 0].merge(main[["cell", "variant", "model.width"]], on="cell")
    for row in data[(data["kind"] == "weight") & (data["type"] == "ffn.up_proj")].itertuples():
        sel = joined[
            (joined["variant"] == row.variant)
            & (joined["model.width"] == row.width)
            & (joined["kind"] == "weight")
            & joined["tensor"].str.endswith("ffn.up_proj.weight")
        ]
        assert row.rms == pytest.approx(sel["rms"].median())
    umup_w = data[(data["variant"] == "umup") & (data["kind"] == "weight")]["rms"]
    assert umup_w.between(0.9, 1.1).all()


def test_rms_training_shows_ffn_and_decoder_tensors_over_steps(tables, tmp_path):
    data = plot("rms_training", tables, ["rms"], tmp_path / "rt.pdf")
    check_files(tmp_path / "rt.pdf")
    assert set(data["group"]) == {"FFN", "decoder"}
    raw = pd.read_csv(tables / "rms" / "rms.csv")
    assert sorted(data["step"].unique()) == sorted(raw["step"].unique())
    main = main_table(tables, "rms")
    assert set(data["cell"]) <= set(main[main["model.width"] == 64]["cell"])


def test_rms_end_axes_and_base_point(tables, tmp_path):
    sweeps = ["lr_width", "lr_depth", "lr_steps", "lr_batch"]
    data = plot("rms_end", tables, sweeps, tmp_path / "re.pdf")
    check_files(tmp_path / "re.pdf")
    assert set(data["axis"]) == {"train.lr", "model.width", "model.depth", "train.steps", "train.batch_size"}
    main = main_table(tables, *sweeps)
    umup = main[main["variant"] == "umup"]
    at_base = umup[
        (umup["model.width"] == 32)
        & (umup["model.depth"] == 1)
        & (umup["train.steps"] == 20)
        & (umup["train.batch_size"] == 4)
    ]  # the base point: each axis' most common value
    lr = data[data["axis"] == "train.lr"]
    assert set(lr["value"]) == set(at_base["train.lr"])
    width = data[data["axis"] == "model.width"]
    assert set(width["value"]) == {32, 64}
    # one point checked against the raw RMS table: the readout weight at width 64, η = 2 (default)
    cell = main[(main["variant"] == "umup") & (main["model.width"] == 64) & (main["train.lr"] == 2.0)]["cell"]
    raw = pd.concat(pd.read_csv(tables / "rms" / f"{s}.csv") for s in sweeps)
    raw = raw[raw["cell"].isin(cell) & (raw["tensor"] == "readout.weight") & (raw["kind"] == "weight")]
    end = raw[raw["step"] == raw["step"].max()]["rms"].iloc[0]
    row = width[(width["value"] == 64) & (width["type"] == "readout") & (width["kind"] == "weight")]
    assert row["rms"].iloc[0] == pytest.approx(end)


def test_fp8_training(tables, tmp_path):
    result = plot("fp8_training", tables, ["fp8"], tmp_path / "f.pdf")
    check_files(tmp_path / "f.pdf")
    assert set(result["variant"]) == {"umup", "umup_fp8", "mup", "mup_fp8"}
    df = main_table(tables, "fp8")
    for r in result.itertuples():
        row = df[df["cell"] == r.cell].iloc[0]
        if not row["diverged"]:
            assert r.final_val_loss == pytest.approx(row["final_val_loss"])
            assert r.last_val_loss == pytest.approx(row["final_val_loss"])


def test_fp8_scheme_is_its_own_variant():
    """A run under model.fp8_scheme all_hidden is drawn as its own line, never merged with the
    selective scheme's; the scheme is ignored where FP8 is off."""
    table = pd.DataFrame(
        {
            "parametrization": ["umup", "umup_fp8", "umup_fp8", "mup", "mup", "umup"],
            "model.fp8": [False, False, False, True, True, False],
            "model.fp8_scheme": ["selective", "selective", "all_hidden", "selective", "all_hidden", "all_hidden"],
            "final_val_loss": [1.0] * 6,
        }
    )
    assert prepare(table)["variant"].tolist() == ["umup", "umup_fp8", "umup_fp8_all", "mup_fp8", "mup_fp8_all", "umup"]


def test_coord_check(coord_tables, tmp_path):
    slopes = plot("coord_check", coord_tables, ["sp", "umup"], tmp_path / "c.pdf")
    check_files(tmp_path / "c.pdf")
    assert set(slopes["parametrization"]) == {"sp", "umup"}
    assert set(slopes["step"]) == {0, 1, 2}


def test_small_grid_and_missing_parametrization(tables, tmp_path):
    """Smoke-sized input (one parametrization, 2 widths × 2 LRs; all of one line diverged)."""
    df = main_table(tables, "lr_width")
    small = df[(df["variant"] == "umup") & (df["train.lr"] >= 2.0)]
    assert len(small) == 4
    small.loc[small["model.width"] == 32, "diverged"] = True
    result = transfer("transfer_width", prepare(small), tmp_path / "small.pdf")
    check_files(tmp_path / "small.pdf")
    assert list(result["panel"].unique()) == ["umup"]
    w32 = result[result["line"] == 32].iloc[0]
    assert math.isnan(w32["x_opt"]) and w32["diverged"] == 2


def test_cli_plot_writes_figure_and_data(tables, tmp_path):
    out = tmp_path / "figs" / "transfer_width.pdf"
    data = tmp_path / "tw.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "umup_repro.cli",
            "plot",
            "transfer_width",
            "--tables",
            str(tables),
            "--sweeps",
            "lr_width",
            "--out",
            str(out),
            "--data",
            str(data),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    check_files(out)
    assert len(pd.read_csv(data)) == 6  # 3 parametrizations × 2 widths
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "umup_repro.cli",
            "plot",
            "transfer_width",
            "--tables",
            str(tmp_path / "nowhere"),
            "--out",
            str(out),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "lr_width.csv is missing" in proc.stderr


def test_catalog_names_each_figures_drawing_function_and_its_tables():
    """The catalog (umup_repro/core/figure_catalog.py) is the one list of figures: each names a
    function that exists and takes the catalog's tables, in order, then the output path."""
    import inspect

    from umup_repro.core.figure_catalog import PLOTTED
    from umup_repro.figures.plot import drawing_function

    for name, figure in FIGURES.items():
        draw = drawing_function(name)
        assert callable(draw), name
        if name in PLOTTED:
            required = [p for p in inspect.signature(draw).parameters.values() if p.default is p.empty]
            assert len(required) == len(figure.tables) + 1, (name, required, figure.tables)
    rules = "".join(p.read_text() for p in (Path(__file__).parents[1] / "workflow" / "rules").glob("*.smk"))
    assert "figure_catalog" in rules and "FIGURE_EXTRA_TABLES" not in rules


def test_the_catalog_and_the_figures_package_load_no_matplotlib():
    """The DAG and the preset checks read the catalog on every evaluation: no matplotlib, pandas or
    torch behind it, nor behind `import umup_repro.figures`."""
    code = (
        "import sys, umup_repro.core.figure_catalog, umup_repro.sweeps.preset_checks, umup_repro.figures;"
        " print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'pandas', 'torch', 'seaborn'}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "[]", proc.stdout


def _dry_run_jobs(target: str) -> dict[str, int]:
    import shutil

    exe = shutil.which("snakemake") or str(Path(sys.executable).with_name("snakemake"))
    proc = subprocess.run(
        [exe, "-n", "--forceall", target, "--config", "preset=smoke"],
        cwd=Path(__file__).parents[1],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    stats = proc.stdout.split("Job stats:")[1].split("\n\n")[0]
    jobs = {}
    for line in stats.splitlines()[3:]:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            jobs[parts[0]] = int(parts[1])
    return jobs


@pytest.mark.parametrize("name", ["rms_end", "coord_check"])
def test_one_figure_schedules_only_its_tables(name):
    """`snakemake -n -F figures/NAME.pdf` (smoke preset, everything forced) plans that figure's rule,
    the aggregation of exactly its sweeps (or the coordinate-check jobs), and nothing of other figures."""
    import yaml

    preset = yaml.safe_load((Path(__file__).parents[1] / "config" / "presets" / "smoke.yaml").read_text())
    jobs = _dry_run_jobs(f"figures/{name}.pdf")
    assert jobs.get(f"figure_{name}") == 1
    assert not [j for j in jobs if j.startswith("figure_") and j != f"figure_{name}"]
    if name == "coord_check":
        assert jobs.get("coord_check_tables") == 3 and "train_cell" not in jobs
    else:
        assert jobs.get("aggregate_sweep") == len(set(preset["figures"][name]))
        assert "coord_check_tables" not in jobs
