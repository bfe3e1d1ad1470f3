"""The Snakemake DAG, run for real on the `smoke` preset in a copy of the workflow.

One session-wide run (tests/conftest.py) builds every figure and table; the tests then check what users rely on:
one figure's target schedules only its cells, a rerun does nothing, deleting a run folder reruns
that cell, and a changed config gets a new id whose results replace the old ones in the tables.
"""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_run import REPO, job_counts, snakemake, workflow_copy

from umup_repro.sweeps.grid import expand_preset
from umup_repro.sweeps.presets import load_preset
from umup_repro.sweeps.search_stage import load_decisions


@pytest.fixture(scope="module")
def smoke(smoke_local, tmp_path_factory):
    """A copy of the session's local smoke run (timestamps and Snakemake's metadata kept), which
    these tests may change."""
    root = tmp_path_factory.mktemp("smoke_copy") / "wf"
    shutil.copytree(smoke_local["root"], root, symlinks=True)
    return {**smoke_local, "root": root}


def test_one_figure_schedules_only_its_cells(smoke):
    counts = job_counts(smoke["dry"])
    n_cells = len(expand_preset("smoke", ["lr_width"])["lr_width"])
    assert counts == {"train_cell": n_cells, "aggregate_sweep": 1, "figure_transfer_width": 1}


def test_smoke_builds_every_figure_and_table(smoke):
    root = smoke["root"]
    config = load_preset("smoke")
    # a staged search's later stages: the cells its stage decisions (on disk) add
    decisions = {s: load_decisions(root / "results" / "search", s) for s in config["sweeps"]}
    expanded = expand_preset(config, decisions=decisions)
    assert decisions["search_staged"].keys() == {"lr", "hp"}
    assert config["analyses"] is False and not (root / "figures" / "low_rank.pdf").exists()
    for name in config["figures"]:
        pdf, png = root / "figures" / f"{name}.pdf", root / "figures" / f"{name}.png"
        assert pdf.stat().st_size > 5_000, name
        import matplotlib.image

        pixels = matplotlib.image.imread(png)
        assert pixels.shape[0] > 200 and float(pixels[..., :3].std()) > 0.05, f"{name}.png looks blank"
    for sweep, cells in expanded.items():
        t = pd.read_csv(root / "results" / "tables" / f"{sweep}.csv")
        assert list(t["cell"]) == [c.id for c in cells]
        ok = t[~t["diverged"].astype(bool)]
        assert len(ok) >= len(t) - 1 and np.isfinite(ok["final_val_loss"]).all()
        # it trained: below 12 (ln 4096 = 8.3 at init, diverge_loss 20). A cell that repeats a
        # 512-token corpus (data.train_tokens, the TP-V setting) memorises it: its validation loss
        # rises past 12 by overfitting (measured 9.9–12.7, train 1.7–6.0), so its train loss is the check
        repeated = ok["data.train_tokens"].notna() if "data.train_tokens" in ok else pd.Series(False, index=ok.index)
        assert (ok.loc[~repeated, "final_val_loss"] < 12).all() and (ok.loc[repeated, "final_train_loss"] < 12).all()
        for kind in ("metrics", "rms"):
            long = pd.read_csv(root / "results" / "tables" / kind / f"{sweep}.csv")
            assert set(long["cell"]) == set(t["cell"]), (sweep, kind)
    staged = pd.read_csv(root / "results" / "tables" / "search_staged.csv")
    assert set(staged["search.stage"]) == {"lr", "hp", "combined"}
    pairs = pd.read_csv(root / "results" / "tables" / "transfer_error.csv")
    assert len(pairs) == 4 and pairs["transfer_error"].ge(0).all()  # 2 pairs x both orders
    summary = pd.read_csv(root / "results" / "tables" / "transfer_summary.csv")
    assert set(summary["sweep"]) == {s for s, spec in config["sweeps"].items() if "transfer" in spec}
    assert summary["best_loss"].notna().all()
    # the scorecard: every claim has a verdict; smoke has every claim's inputs (its sweeps include
    # the pair grids and the three stability settings), so none is `not measured`
    from umup_repro.results.claims import CLAIMS

    card = pd.read_csv(root / "results" / "tables" / "claims.csv")
    assert list(card["claim"]) == [c[0] for c in CLAIMS]
    assert set(card["verdict"]) <= {"holds", "fails", "inconclusive", "not measured"}
    assert {"interval", "reason"} <= set(card.columns)
    # smoke's 2-point η grids put every optimum on an edge: no drift claim may hold
    drift_claims = card[card["threshold"].str.contains("drift", case=False)]
    assert len(drift_claims) == 5 and (drift_claims["verdict"] != "holds").all(), drift_claims.to_string()
    not_measured = set(card.loc[card["verdict"] == "not measured", "claim"])
    assert not_measured == set(), card[["claim", "measured", "verdict"]].to_string()
    assert (root / "figures" / "claims.png").stat().st_size > 5_000 and (root / "figures" / "claims.md").exists()


def test_rerun_after_everything_is_built_does_nothing(smoke):
    out = snakemake(smoke["root"], "-n", "--config", "preset=smoke")
    assert "Nothing to be done" in out.stdout + out.stderr


# train_cell's shell command as released: Snakemake reruns a job whose rule code (the shell
# command) or recorded params changed, and rerunning train_cell deletes the summary first, so the
# cell trains again: every finished cell of a user's results folder would be retrained. Change it
# only with a line in docs/design.md's Changelog saying so.
TRAIN_CELL_SHELL = (
    "printf '%s' {params.config:q} | OMP_NUM_THREADS={threads} {params.launch}umup-repro train -"
    " --out results/runs/{wildcards.sweep}/{wildcards.cell} --sweep {wildcards.sweep}"
    " --cell {wildcards.cell} --progress lines {params.reuse}"
    " --log results/logs/train/{wildcards.sweep}/{wildcards.cell}.attempts.log > {log} 2>&1"
)


def test_finished_cells_stay_finished_across_releases(smoke):
    """What Snakemake compares to decide a rerun stays as released: the shell command, and the
    recorded params (those not derived from the input): the cell's config alone."""
    import ast
    import base64

    rules = (REPO / "workflow" / "rules" / "sweeps.smk").read_text()
    shell = rules.split("rule train_cell:", 1)[1].split("shell:", 1)[1].split("\n\n", 1)[0]
    assert "".join(ast.literal_eval(f"({shell.strip()})")) == TRAIN_CELL_SHELL
    recorded = 0
    for entry in (smoke["root"] / ".snakemake" / "metadata").iterdir():
        name = base64.b64decode(entry.name).decode()
        meta = json.loads(entry.read_text())
        if name.startswith("results/runs/") and meta.get("rule") == "train_cell":
            assert len(meta["params"]) == 1 and '"parametrization"' in meta["params"][0], (name, meta["params"])
            recorded += 1
    assert recorded > 10


def test_deleting_a_run_folder_reruns_that_cell(smoke):
    root = smoke["root"]
    cells = expand_preset("smoke")
    shared = {c.id for s, cs in cells.items() if s != "lr_steps" for c in cs}
    victim = next(c for c in cells["lr_steps"] if c.id not in shared)
    shutil.rmtree(root / "results" / "runs" / "lr_steps" / victim.id)
    out = snakemake(root, "-n", "--config", "preset=smoke")
    counts = job_counts(out.stdout + out.stderr)
    assert counts.get("train_cell") == 1 and counts.get("aggregate_sweep") == 1, (victim.id, out.stdout + out.stderr)
    before = (root / "results" / "tables" / "lr_steps.csv").stat().st_mtime
    snakemake(root, "--cores", "2", "--config", "preset=smoke")
    assert (
        json.loads((root / "results" / "runs" / "lr_steps" / victim.id / "summary.json").read_text())["cell"]
        == victim.id
    )
    assert (root / "results" / "tables" / "lr_steps.csv").stat().st_mtime > before


def test_a_changed_cell_config_gets_a_new_id_and_stale_results_leave_the_tables(smoke):
    root = smoke["root"]
    preset = yaml.safe_load((root / "config" / "presets" / "smoke.yaml").read_text())
    old = {c.id for c in expand_preset("smoke", ["lr_steps"])["lr_steps"]}
    block = preset["sweeps"]["lr_steps"]["blocks"][0]
    block["grid"]["train.steps"] = [10, 16]  # was [10, 20]
    (root / "config" / "presets" / "smoke_changed.yaml").write_text(yaml.safe_dump(preset))
    snakemake(root, "--cores", "2", "results/tables/lr_steps.csv", "--config", "preset=smoke_changed")
    t = pd.read_csv(root / "results" / "tables" / "lr_steps.csv")
    assert sorted(t["train.steps"].unique()) == [10, 16]
    kept = set(t["cell"]) & old
    assert len(kept) == 2 and len(set(t["cell"]) - old) == 2  # the 10-step cells keep their ids
    assert all((root / "results" / "runs" / "lr_steps" / cid).is_dir() for cid in old)  # stale folders stay on disk


def test_bad_preset_fails_before_any_job_with_the_field_named(tmp_path):
    root = workflow_copy(tmp_path / "wf")
    out = snakemake(root, "-n", "--config", "preset=nope", check=False)
    assert out.returncode != 0
    assert "unknown preset 'nope'; allowed: large, large_smoke, paper, scale, smoke, tiny" in out.stdout + out.stderr
    assert not (root / "results").exists()


def test_paper_preset_dry_run_schedules_thousands_of_cells(tmp_path):
    root = workflow_copy(tmp_path / "wf")
    out = snakemake(root, "-n", "--config", "preset=paper")
    counts = job_counts(out.stdout + out.stderr)
    n = sum(len(c) for c in expand_preset("paper").values())
    assert counts["train_cell"] == n > 2000
