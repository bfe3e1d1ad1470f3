"""The benchmarks a user reads numbers from: `bench-cell`'s parts add up to the cell's wall time and
name each phase; `bench`'s Lightning run and plain loops take turns step by step. No timing
thresholds: the machine's load decides those."""

from __future__ import annotations

import pytest

from umup_repro.bench import bench_cell

pytest.importorskip("lightning")


def test_ledger_charges_nested_phases_to_the_inner_one(monkeypatch):
    clock = iter([0.0, 1.0, 3.0, 4.0, 4.5, 5.0])  # outer 0-5 holds inner 1-3 and inner 4-4.5
    monkeypatch.setattr(bench_cell.time, "monotonic", lambda: next(clock))
    ledger = bench_cell.Ledger()
    ledger.begin("outer")
    for _ in range(2):
        ledger.begin("inner")
        ledger.end("inner")
    ledger.end("outer")
    assert ledger.seconds == {"inner": 2.5, "outer": 2.5}
    assert ledger.counts == {"inner": 2, "outer": 1}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("umup_cache")


def test_breakdown_parts_add_up_to_the_wall_time(cache, monkeypatch):
    monkeypatch.setenv("UMUP_CACHE", str(cache))
    from umup_repro.core.config import resolve_config
    from umup_repro.data import token_arrays

    raw = bench_cell.cell_config("tiny", 32, 3)
    raw["log"] = {"rms_every": 2, "val_every": 2}
    raw["train"]["checkpoint_every"] = 2
    token_arrays(resolve_config(raw))
    result = bench_cell.breakdown(raw)
    parts = result["parts"]
    assert sum(parts.values()) == pytest.approx(result["wall"], abs=1e-9)
    assert all(v >= 0 for k, v in parts.items() if k != "other"), parts
    assert parts["other"] > -1e-3  # disjoint parts: "other" is what none claims
    assert set(parts) <= set(bench_cell.PARTS)
    for part in ("import torch", "import lightning", "model build", "Trainer set-up", "training steps", "summary"):
        assert part in parts, part
    counts = result["counts"]  # steps 0..2: validation at 0, 2 and the final 3; RMS at 0, 2
    assert counts["validation, step 0"] == 1 and counts["validation, every val_every"] == 1
    assert counts["validation, final"] == 1 and counts["RMS probes (rows)"] == 2
    assert counts["checkpoints"] == 2  # the one at step 2, and removing it at the end


def test_bench_cell_command_prints_the_rows(cache, monkeypatch, capsys):
    monkeypatch.setenv("UMUP_CACHE", str(cache))
    from umup_repro.cli import main

    assert main(["bench-cell", "--width", "32", "--steps", "1", "--batched", "3"]) == 0
    out = capsys.readouterr().out
    assert "cell of 1 steps:" in out
    for part in ("interpreter start", "import lightning", "training steps", "interpreter exit", "other", "total"):
        assert f"  {part} " in out, out
    # the batched cells: one row each (wall, training, fixed = wall - training), then the median
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit() and len(line.split()) == 4]
    assert [int(r[0]) for r in rows] == [0, 1, 2]
    for _, wall, training, fixed in rows:
        assert abs(float(wall) - float(training) - float(fixed)) < 0.011
    assert "fixed cost per cell in a batch: median" in out


def test_bench_runs_lightning_and_plain_loops_in_turns(cache, monkeypatch):
    monkeypatch.setenv("UMUP_CACHE", str(cache))
    from umup_repro.bench import bench

    order = []
    step = bench.PlainLoop.step
    monkeypatch.setattr(bench.PlainLoop, "step", lambda self: (order.append(self.config.parametrization), step(self)))
    umup = bench.preset_cell("tiny", "umup", 32, 4)
    sp = bench.preset_cell("tiny", "sp", 32, 4)
    times = bench.compare_loops(umup, sp, warmup=1)
    assert order == ["umup", "sp"] * 4  # a plain step of each after every Lightning step
    for k in ("umup lightning", "umup plain", "sp plain", "lightning / plain", "umup / sp"):
        assert len(times[k]) == 3, k
    r = bench.spread(times["lightning / plain"])
    assert r["min"] <= r["q1"] <= r["median"] <= r["q3"] <= r["max"]
