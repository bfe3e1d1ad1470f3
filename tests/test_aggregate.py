"""Run folders -> tables: only the grid's cells, long tables, and the transfer summary's arithmetic."""

import json
import math

import pandas as pd
import pytest

from umup_repro.results.aggregate import MissingRunsError, aggregate_sweep, transfer_summary
from umup_repro.sweeps.grid import expand_sweep


def table(rows):
    return pd.DataFrame(
        rows,
        columns=[
            "parametrization",
            "model.width",
            "train.lr",
            "final_val_loss",
            "diverged",
            "search.axis",
            "hp.alpha_res",
        ],
    )


def test_transfer_summary_drift_and_regret():
    # SP's optimum moves from lr 2 (width 64) to lr 1 (width 256); u-μP's stays at 2.
    loss = {
        ("sp", 64): {1: 5.0, 2: 4.0, 4: 4.5},
        ("sp", 256): {1: 3.0, 2: 3.5, 4: math.nan},
        ("umup", 64): {1: 4.2, 2: 4.0, 4: 4.1},
        ("umup", 256): {1: 3.3, 2: 3.1, 4: 3.2},
    }
    rows = [(p, w, float(lr), v, math.isnan(v), "", 1.0) for (p, w), d in loss.items() for lr, v in d.items()]
    s = transfer_summary(table(rows), "lr_width", {"axis": "model.width"}).set_index(["group", "axis_value"])
    assert s.loc[("sp", 256), "opt_value"] == 1.0 and s.loc[("sp", 256), "drift_log2"] == -1.0
    assert s.loc[("sp", 256), "regret"] == pytest.approx(0.5)  # loss at lr 2 (proxy's optimum) minus best
    assert s.loc[("sp", 256), "diverged"] == 1
    assert s.loc[("umup", 256), "drift_log2"] == 0.0 and s.loc[("umup", 256), "regret"] == 0.0
    assert (s.xs(64, level="axis_value")[["drift_log2", "regret"]] == 0).all().all()
    assert s.loc[("sp", 64), "proxy_value"] == 64


def test_transfer_regret_is_infinite_when_the_proxys_optimum_diverges_at_the_target():
    rows = [
        ("umup", 64, 4.0, 3.0, False, "", 1.0),
        ("umup", 64, 1.0, 3.5, False, "", 1.0),
        ("umup", 128, 4.0, None, True, "", 1.0),
        ("umup", 128, 1.0, 3.2, False, "", 1.0),
    ]
    s = transfer_summary(table(rows), "w", {"axis": "model.width"}).set_index("axis_value")
    assert s.loc[128, "regret"] == math.inf and s.loc[128, "drift_log2"] == -2.0


def test_transfer_of_each_independently_searched_hp_uses_its_rows_and_the_base():
    rows = [("umup", w, 2.0, base, False, "base", 1.0) for w, base in ((64, 4.0), (128, 3.0))]
    rows += [
        ("umup", 64, 2.0, 3.9, False, "hp.alpha_res", 2.0),
        ("umup", 128, 2.0, 2.8, False, "hp.alpha_res", 2.0),
        ("umup", 64, 2.0, 4.5, False, "hp.alpha_res", 0.5),
        ("umup", 128, 2.0, 3.3, False, "hp.alpha_res", 0.5),
    ]
    s = transfer_summary(table(rows), "hp", {"axis": "model.width", "hp": "search.axis"})
    assert list(s["hp"].unique()) == ["hp.alpha_res"]
    assert list(s["opt_value"]) == [2.0, 2.0] and list(s["runs"]) == [3, 3]


def fake_run(folder, cell, loss, steps=3):
    """A run folder with the files train.py writes (for the aggregation's bookkeeping only)."""
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text(
        "step,tokens,train_loss,val_loss,lr\n" + "".join(f"{s},{s * 8},{loss + 1},,0.1\n" for s in range(steps))
    )
    (folder / "rms.csv").write_text("step,tensor,kind,rms\n0,embedding,weight,1.0\n")
    summary = {
        "cell": cell.id,
        "config_hash": cell.id,
        "sweep": cell.sweep,
        "final_val_loss": loss,
        "diverged": False,
        "steps_done": steps - 1,
        "versions": {"torch": "x"},
        **{"train.lr": cell.config.train.lr},
    }
    (folder / "summary.json").write_text(json.dumps(summary))


def test_aggregate_reads_only_the_grids_cells_and_refuses_incomplete_sweeps(tmp_path):
    cells = expand_sweep("lr", {"blocks": [{"grid": {"train.lr": [1.0, 2.0]}}]})
    runs, tables = tmp_path / "runs", tmp_path / "tables"
    fake_run(runs / "lr" / cells[0].id, cells[0], 3.0)
    with pytest.raises(MissingRunsError, match=rf"sweep lr: 1 of 2 cells have no summary.json.*{cells[1].id}"):
        aggregate_sweep(cells, runs, tables)
    assert not (tables / "lr.csv").exists()
    fake_run(runs / "lr" / cells[1].id, cells[1], 2.5)
    stale = expand_sweep("lr", {"blocks": [{"grid": {"train.lr": [1.0]}}], "set": {"train.seed": 9}})[0]
    fake_run(runs / "lr" / stale.id, stale, 0.1)  # an old config's folder: never read
    t = aggregate_sweep(cells, runs, tables)
    assert list(t["cell"]) == [c.id for c in cells]
    assert list(pd.read_csv(tables / "lr.csv")["final_val_loss"]) == [3.0, 2.5]
    assert {"search.kind", "search.index", "search.axis"} <= set(t.columns)
    long = pd.read_csv(tables / "metrics" / "lr.csv")
    assert len(long) == 6 and set(long["cell"]) == {c.id for c in cells}
    assert list(pd.read_csv(tables / "rms" / "lr.csv").columns) == ["cell", "step", "tensor", "kind", "rms"]
    assert not list(tables.rglob(".*tmp*"))  # atomic writes leave no temp files
