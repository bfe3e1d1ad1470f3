"""docs/extending.md stays true: its examples run as written (a rule set reaches a trained run
folder, a claim gets its verdict row in the scorecard), and the places the page says must agree
(a parametrization's names, a search kind's schema and expansion) do."""

import itertools
import json
import math
import re
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "extending.md"


def page_examples() -> list[str]:
    """The page's python blocks, in order: the rule set, the catalog entry, the claim, the figure."""
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)


def page_example(marker: str) -> str:
    """The one python block of the page that contains `marker`."""
    (block,) = [b for b in page_examples() if marker in b]
    return block


TINY_CELL = {
    "model": {"width": 32, "depth": 1, "head_dim": 32},
    "train": {"steps": 2, "batch_size": 4, "warmup": 0},
    "data": {"val_batches": 1},
    "log": {"val_every": 2, "rms_every": 2},
}


# ---------------------------------------------------------------------------------------------
# a parametrization


def test_a_rule_set_tried_as_the_page_says_reaches_the_run_folder(tmp_path, monkeypatch):
    """The page's toy rule set put in place of SP's (`monkeypatch.setitem(RULES, "sp", TOY)`):
    one tiny cell trains, and parametrization.csv and the summary show the toy's rules."""
    from umup_repro.core.config import resolve_config
    from umup_repro.model.parametrization import RULES
    from umup_repro.training.train import run_cell

    namespace: dict = {}
    exec(page_example("TOY = {"), namespace)  # noqa: S102 - the page's own example
    monkeypatch.setitem(RULES, "sp", namespace["TOY"])
    config = resolve_config({"parametrization": "sp", **TINY_CELL})
    out = tmp_path / "toy"
    assert run_cell(config, out, progress="none") == 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps_done"] == 2 and summary["model.width"] == 32 and not summary["diverged"]
    assert math.isfinite(summary["final_val_loss"])
    table = pd.read_csv(out / "parametrization.csv")
    weights = table[table["role"].isin(["embedding", "hidden", "readout"])]
    assert len(weights) > 0 and (weights["init_std"] == 0.02).all()
    hidden = table[table["role"] == "hidden"]
    fan_in = hidden["shape"].map(lambda s: int(s.split("x")[1]))
    assert (hidden["lr_factor"] * fan_in.map(math.sqrt)).round(9).eq(1.0).all()  # 1/√fan_in, SP: no depth factor


def test_a_parametrization_registered_as_the_page_says_trains_under_its_name(tmp_path, monkeypatch):
    """The page's catalog entry (a μP variant with its own η and base width), registered the
    documented way: the config accepts its name with its defaults, the figures label it, and one
    tiny cell trains with μP's rules, its run folder showing the entry's η and HP."""
    from umup_repro.core import config as config_module
    from umup_repro.core import parametrizations
    from umup_repro.core.config import resolve_config
    from umup_repro.figures.style import param_label
    from umup_repro.model.parametrization import family
    from umup_repro.training.train import run_cell

    monkeypatch.setattr(parametrizations, "CATALOG", dict(parametrizations.CATALOG))
    exec(page_example("parametrizations.register("), {})  # noqa: S102 - the page's own example
    assert "mup_wide" in parametrizations.names() and "mup_wide" in config_module.PARAMETRIZATIONS  # views
    assert config_module.DEFAULT_LR["mup_wide"] == 2.0**-6 and config_module.HP_DEFAULTS["mup_wide"]["base_width"] == 64
    assert family("mup_wide") == "mup" and param_label("mup_wide") == "μP (base width 64)"
    config = resolve_config({"parametrization": "mup_wide", **TINY_CELL})
    assert config.train.lr == 2.0**-6 and config.hp["base_width"] == 64 and not config.uses_fp8
    out = tmp_path / "mup_wide"
    assert run_cell(config, out, progress="none") == 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["parametrization"] == "mup_wide" and summary["steps_done"] == 2 and not summary["diverged"]
    assert summary["train.lr"] == 2.0**-6 and summary["hp.base_width"] == 64
    assert yaml.safe_load((out / "config.yaml").read_text())["parametrization"] == "mup_wide"
    table = pd.read_csv(out / "parametrization.csv")
    readout = table[table["role"] == "readout"]
    assert (readout["multiplier"] == 64 / 32).all()  # μP's α_out · base_fan_in / fan_in, base width 64
    monkeypatch.undo()  # the test's copy of the catalog goes, and the entry with it
    assert "mup_wide" not in config_module.PARAMETRIZATIONS and "mup_wide" not in config_module.DEFAULT_LR


def test_every_parametrization_has_a_family_with_a_rule_for_every_role():
    """The catalog is the one list of names: every name the config accepts is in it, and its
    family has a rule for every role; an unknown name is refused, naming the allowed ones."""
    from umup_repro.core import parametrizations
    from umup_repro.core.config import ConfigError, resolve_config
    from umup_repro.model.parametrization import ROLES, RULES, family, residual_weights

    for name, entry in parametrizations.CATALOG.items():
        assert entry.name == name and resolve_config({"parametrization": name}).parametrization == name
        assert set(RULES[family(name)]) == set(ROLES), name
    with pytest.raises(ConfigError, match="'sp', 'mup', 'umup' or 'umup_fp8'"):
        resolve_config({"parametrization": "toy"})
    with pytest.raises(ValueError, match="allowed: sp, mup, umup, umup_fp8"):
        residual_weights("toy", 2, {})


# ---------------------------------------------------------------------------------------------
# a sweep or search kind

# One block per search kind the schema allows (a new kind: add an example here, docs/extending.md).
KIND_EXAMPLES = {
    "independent": {"grid": {"model.width": [32]}, "independent": {"train.lr": [0.5, 2.0]}},
    "random": {"random": {"n": 2, "seed": 0, "space": {"train.lr": {"log2_uniform": [-2, 2]}}}},
    "staged": {"staged": {"lr": {"train.lr": [0.5, 1.0]}, "hp": {"hp.alpha_res": [0.5, 2.0]}}},
}
NOT_A_SEARCH = {"set", "grid", "seeds"}


def block_schema() -> dict:
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    return {"$defs": schema["$defs"], "$ref": "#/$defs/block"}


def test_every_search_kind_in_the_schema_expands_into_cells_of_that_kind():
    from umup_repro.sweeps.grid import expand_sweep

    schema = block_schema()
    kinds = set(schema["$defs"]["block"]["properties"]) - NOT_A_SEARCH
    assert kinds == set(KIND_EXAMPLES), "add an example block of the new search kind to KIND_EXAMPLES"
    defaults = {"model": {"width": 32, "depth": 1, "head_dim": 32}, "train": {"steps": 2}}
    for kind, block in {"grid": {"grid": {"train.lr": [0.5, 1.0]}}, **KIND_EXAMPLES}.items():
        jsonschema.validate(block, schema)
        cells = expand_sweep("s", {"blocks": [block]}, defaults)
        assert cells and {c.search_kind for c in cells} == {kind}, kind


def test_a_block_holds_one_search_at_most():
    """The schema's `not.anyOf` names every pair of search kinds (the page's step 2)."""
    schema = block_schema()
    for (_, block_a), (_, block_b) in itertools.combinations(KIND_EXAMPLES.items(), 2):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**block_a, **block_b}, schema)


# ---------------------------------------------------------------------------------------------
# a claim


def lr_width_table(path: Path, umup_best: float, sp_best: float) -> None:
    """A hand-made `lr_width.csv`: two widths, two η each, u-μP and SP, one seed."""
    rows = []
    for p, best in (("umup", umup_best), ("sp", sp_best)):
        for width, offset in ((64, 0.3), (128, 0.0)):
            for lr, extra in ((0.25, 0.1), (1.0, 0.0)):
                rows.append(
                    {
                        "cell": f"{p}-{width}-{lr}",
                        "sweep": "lr_width",
                        "parametrization": p,
                        "model.width": width,
                        "train.lr": lr,
                        "final_val_loss": best + offset + extra,
                        "diverged": False,
                    }
                )
    pd.DataFrame(rows).to_csv(path / "lr_width.csv", index=False)


@pytest.mark.parametrize(
    "umup_best, sp_best, verdict, measured",
    [
        (3.8, 3.9, "holds", "width 128: 3.800 vs 3.900"),
        (4.0, 3.9, "fails", "width 128: 4.000 vs 3.900"),
        (None, None, "not measured", None),
    ],
)
def test_a_claim_added_as_the_page_says_gets_its_verdict_row(
    tmp_path, monkeypatch, umup_best, sp_best, verdict, measured
):
    from umup_repro.results import claims

    monkeypatch.setattr(claims, "CLAIMS", list(claims.CLAIMS))  # the page appends to it
    before = len(claims.CLAIMS)
    exec(page_example("claims.CLAIMS.append("), {})  # noqa: S102 - the page's own example
    assert len(claims.CLAIMS) == before + 1
    if umup_best is not None:
        lr_width_table(tmp_path, umup_best, sp_best)

    card = claims.scorecard(tmp_path)
    assert len(card) == before + 1
    row = card.iloc[-1]
    assert row["claim"] == "u-μP's best loss ≤ SP's at the largest width"
    assert row["verdict"] == verdict
    if measured is not None:
        assert row["measured"] == measured


# ---------------------------------------------------------------------------------------------
# a figure


def test_a_figure_added_as_the_page_says_is_drawn_from_its_tables(tmp_path, monkeypatch):
    """The page's drawing function, as the module its entry names, and its entry put in the
    catalog: `plot` draws it from a hand-made lr_width table, and the rules' tables are the entry's."""
    import sys
    import types

    from umup_repro.core.figure_catalog import FIGURES, tables_needed
    from umup_repro.figures.plot import plot

    module = types.ModuleType("umup_repro.figures.best_loss")
    exec(page_example("best_loss_by_width"), module.__dict__)  # noqa: S102 - the page's own example
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(FIGURES, module.BEST_LOSS.name, module.BEST_LOSS)
    assert tables_needed("best_loss_width") == ["lr_width.csv"]
    lr_width_table(tmp_path, umup_best=3.8, sp_best=3.9)

    out = tmp_path / "figures" / "best_loss_width.pdf"
    best = plot("best_loss_width", tmp_path, out=out)
    assert out.stat().st_size > 0 and out.with_suffix(".png").stat().st_size > 0
    got = {(r["variant"], r["model.width"]): round(r["loss"], 6) for _, r in best.iterrows()}
    assert got == {("umup", 64): 4.1, ("umup", 128): 3.8, ("sp", 64): 4.2, ("sp", 128): 3.9}
