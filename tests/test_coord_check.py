"""Tensor Programs V coordinate check (Adam, 4 steps, one batch of real text, widths 64…1024).

Slopes are least-squares log2(RMS) vs log2(width) fits over 5 widths. μP/u-μP: every tracked
activation within ±0.15 after the 4th step (the acceptance tolerance; measured max 0.07 for
u-μP, 0.10 for μP). At initialisation the logits are ≈ 1/√width by design (slope -0.5), which
is why the check is made after training has moved them. SP: logits slope ≥ 0.4 (measured 0.6–0.9).
"""

import subprocess
import sys

import pandas as pd
import pytest

from umup_repro.analyses.coord_check import run_coord_check
from umup_repro.results.tables import width_slopes

WIDTHS = [64, 128, 256, 512, 1024]
STEPS = 4


@pytest.fixture(scope="module")
def tables():
    return {p: run_coord_check(p, WIDTHS, depth=2, steps=STEPS) for p in ("sp", "mup", "umup")}


@pytest.mark.parametrize("parametrization", ["mup", "umup"])
def test_mup_and_umup_activations_flat_in_width(tables, parametrization):
    slopes = width_slopes(tables[parametrization])
    final = slopes[slopes["step"] == STEPS]
    assert len(final) == 2 * 13 + 3  # every tracked activation of a depth-2 model
    worst = final.loc[final["slope"].abs().idxmax()]
    assert abs(worst["slope"]) <= 0.15, worst.to_dict()
    # the logits' 1/√width at init is by design, and gone after training
    init_logits = slopes[(slopes["step"] == 0) & (slopes["tensor"] == "readout")]["slope"].item()
    assert init_logits == pytest.approx(-0.5, abs=0.05)


def test_sp_logits_blow_up_with_width(tables):
    slopes = width_slopes(tables["sp"])
    logits = slopes[(slopes["tensor"] == "readout") & (slopes["step"] >= 3)]["slope"]
    assert (logits >= 0.4).all(), logits.tolist()


def test_training_moves_all_three(tables):
    """Guard against a vacuous check: μP's and u-μP's losses fall at every width; SP's falls at
    width 64 but ends higher at width 1024 than at 64 (its blow-up, not a broken run)."""
    for p, table in tables.items():
        loss = table[table["kind"] == "loss"].pivot(index="width", columns="step", values="rms")
        if p == "sp":
            assert loss.loc[64, STEPS] < loss.loc[64, 0] and loss.loc[1024, STEPS] > loss.loc[64, STEPS], loss
        else:
            assert (loss[STEPS] < loss[0]).all(), (p, loss)


def test_command_writes_csv_and_figure(tmp_path):
    out = tmp_path / "cc"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "umup_repro.cli",
            "coord-check",
            "--parametrization",
            "umup",
            "--widths",
            "64,128",
            "--steps",
            "3",
            "--out",
            str(out),
        ],
        check=True,
    )
    table = pd.read_csv(out / "coord_check.csv")
    assert list(table.columns) == ["parametrization", "width", "step", "tensor", "kind", "rms"]
    assert set(table["width"]) == {64, 128} and set(table["step"]) == {0, 1, 2, 3}
    assert {"activation", "activation_delta", "grad", "loss"} <= set(table["kind"])
    for name in ("coord_check.pdf", "coord_check.png", "coord_check_slopes.csv"):
        assert (out / name).stat().st_size > 1000
