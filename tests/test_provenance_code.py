"""Runs made by two code versions never land in one table: the code fingerprint and aggregate's refusal."""

import json
import shutil

import pytest
from run_folders import write_run_folder

from umup_repro.results.aggregate import MixedCodeError, aggregate_sweep
from umup_repro.sweeps.grid import expand_sweep
from umup_repro.training import code_fingerprint as cf


def test_every_listed_module_exists_and_the_fingerprint_follows_their_source(tmp_path, monkeypatch):
    assert all((cf.PACKAGE / name).is_file() for name in cf.RESULT_MODULES)
    before = cf.code_fingerprint()
    copy = tmp_path / "umup_repro"
    shutil.copytree(cf.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "resources"))
    monkeypatch.setattr(cf, "PACKAGE", copy)
    cf.code_fingerprint.cache_clear()
    assert cf.code_fingerprint() == before  # same source, same fingerprint
    (copy / "figures" / "plot.py").write_text("# a figure change cannot move a number\n")
    cf.code_fingerprint.cache_clear()
    assert cf.code_fingerprint() == before
    with (copy / "model" / "decoder.py").open("a") as f:
        f.write("\n# a model change\n")
    cf.code_fingerprint.cache_clear()
    assert cf.code_fingerprint() != before
    (copy / "model" / "ops.py").unlink()
    cf.code_fingerprint.cache_clear()
    with pytest.raises(cf.MissingModuleError, match="ops.py"):
        cf.code_fingerprint()
    cf.code_fingerprint.cache_clear()


def _run(folder, cell, fingerprint):
    write_run_folder(folder, cell.id, sweep=cell.sweep, code_fingerprint=fingerprint)


def test_aggregate_refuses_a_sweep_made_by_two_code_versions(tmp_path):
    cells = expand_sweep("lr", {"blocks": [{"grid": {"train.lr": [0.5, 1.0, 2.0]}}]})
    runs, tables = tmp_path / "runs", tmp_path / "tables"
    now = cf.code_fingerprint()
    _run(runs / "lr" / cells[0].id, cells[0], now)
    _run(runs / "lr" / cells[1].id, cells[1], "0123456789ab")  # made by another version of the model
    _run(runs / "lr" / cells[2].id, cells[2], now)
    with pytest.raises(MixedCodeError) as refused:
        aggregate_sweep(cells, runs, tables)
    message = str(refused.value)
    assert "2 code versions" in message and "0123456789ab" in message and now in message
    # names the stale cell (not the current ones) and how to rerun it
    assert f"Rerun the 1 cells not made by {now}: {cells[1].id}:" in message
    assert f"rm -r {runs / 'lr' / cells[1].id} && snakemake" in message
    assert not (tables / "lr.csv").exists()
    # after the rerun by the current code the sweep is aggregated
    shutil.rmtree(runs / "lr" / cells[1].id)
    _run(runs / "lr" / cells[1].id, cells[1], now)
    assert len(aggregate_sweep(cells, runs, tables)) == 3
    assert set(json.loads((runs / "lr" / cells[0].id / "summary.json").read_text())) >= {"code_fingerprint"}


def test_a_run_without_a_fingerprint_is_its_own_version(tmp_path):
    cells = expand_sweep("lr", {"blocks": [{"grid": {"train.lr": [0.5, 1.0]}}]})
    runs = tmp_path / "runs"
    _run(runs / "lr" / cells[0].id, cells[0], cf.code_fingerprint())
    _run(runs / "lr" / cells[1].id, cells[1], None)
    with pytest.raises(MixedCodeError, match=rf"none \(older run\): 1 cells \({cells[1].id}\)"):
        aggregate_sweep(cells, runs, tmp_path / "tables")


def test_peak_flops_follow_the_precision(monkeypatch):
    """MFU's denominator is the peak at the run's precision (Lightning's table), not always bf16's.
    No GPU needed: the device name is what both tables key on."""
    import torch

    from umup_repro.training.provenance import peak_flops

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr("lightning.fabric.accelerators.cuda._is_ampere_or_later", lambda *a: True)
    cuda = torch.device("cuda")
    assert peak_flops(cuda, "bf16-mixed") == pytest.approx(989.4e12)
    assert peak_flops(cuda, "32") == pytest.approx(66.9e12)  # float32 matmul precision "highest": no tf32
    assert peak_flops(torch.device("cpu"), "bf16-mixed") is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA L40S")  # unknown to Lightning
    assert peak_flops(cuda, "bf16-mixed") == pytest.approx(362e12)  # our bf16 table
    assert peak_flops(cuda, "32") is None
