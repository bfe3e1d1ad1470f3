"""Hostile but fair inputs (issue 17): every bad input ends in exit 2 with the field or file named,
before anything is written; what is read back is verified; unusable files are recovered from or
named; no two processes can mix two cells in one run folder.

The validation cases run `umup-repro train` in this process and must not train (they fail before
any data or model); the fault cases (a corrupt checkpoint, two racing trainers) are real
processes, in tests/test_faults.py.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from run_folders import write_run_folder

from umup_repro.cli import main as cli_main
from umup_repro.core import safe_yaml
from umup_repro.core.config import ConfigError, config_hash, config_to_dict, resolve_config
from umup_repro.results.aggregate import aggregate_sweep
from umup_repro.results.aggregate import main as aggregate_main
from umup_repro.sweeps.grid import expand_sweep
from umup_repro.sweeps.presets import PresetError, load_preset, preset_path
from umup_repro.training.run_format import ReadBackError, check_tables, read_summary

# Tiny enough that a real training process is mostly Python start-up (≈ 5 s of CPU on 2 cores).
TINY = {
    "parametrization": "umup",
    "model": {"width": 32, "depth": 1, "head_dim": 16, "seq_len": 16, "vocab_size": 1024},
    "train": {"steps": 4, "batch_size": 2, "warmup": 1, "checkpoint_every": 2},
    "log": {"rms_every": 2, "val_every": 2},
    "data": {"val_batches": 1},
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)  # 9^9 values


@pytest.fixture
def cfg(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def train_inprocess(capsys, *args) -> tuple[int, str]:
    rc = cli_main(["train", *map(str, args), "--progress", "none"])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


# --------------------------------------------------------------------------------------------
# (1) and (6): validation complete before anything is written, messages not tracebacks


@pytest.mark.parametrize(
    "sets, named",
    [
        (["train.lr=.inf"], "train.lr"),
        (["train.lr=.nan"], "train.lr"),
        (["train.diverge_loss=.inf"], "train.diverge_loss"),
        (["train.grad_clip=.inf"], "train.grad_clip"),
        (["train.weight_decay=.inf"], "train.weight_decay"),
        (["model.ffn_ratio=.inf"], "model.ffn_ratio"),
        (["model.rope_base=.inf"], "model.rope_base"),
        (["hp.alpha_res=.inf"], "hp.alpha_res"),
        (["train.seed=-1"], "train.seed"),
        (["train.seed=4294967296"], "train.seed"),
        (["model.ffn_ratio=0.001"], "model.ffn_ratio"),  # FFN width 0
        (["model.head_dim=1"], "model.head_dim"),  # RoPE needs pairs
        (["model.width=48", "model.head_dim=3"], "model.head_dim"),  # odd head dim with RoPE
        (["model.width=true"], "model.width"),  # no bool -> 1
        (["model.width='64'"], "model.width"),  # no str -> int
        (["train.lr='1e-3'"], "train.lr"),
        (["model.rope=1"], "model.rope"),  # no int -> bool
        (["hp.alpha_res=true"], "hp.alpha_res"),
        (["model.width=1048576", "model.head_dim=16"], "model.width"),  # size bounds name the field
        (["model.vocab_size=1000000000"], "model.vocab_size"),
        (["model.seq_len=1000000000"], "model.seq_len"),
        (["train.batch_size=1000000000"], "train.batch_size"),
        (["train.batch_size=65536", "model.seq_len=65536"], "train.batch_size × model.seq_len"),
        (["train.steps=1e30"], "train.steps"),
        (["train.lr=[1"], "--set 'train.lr=[1'"),  # invalid YAML in a --set value
        (["train.lr"], "--set expects key=value"),
        ([f"train.lr={BOMB.replace(chr(10), ', ').join('{}')}"], "expands to more than"),  # alias bomb in --set
        (["model=3"], "model"),
    ],
)
def test_bad_values_exit_2_naming_the_field_before_anything_is_written(capsys, cfg, tmp_path, sets, named):
    out = tmp_path / "run"
    started = time.perf_counter()
    rc, text = train_inprocess(capsys, cfg, "--out", out, *[a for s in sets for a in ("--set", s)])
    assert rc == 2, text
    assert named in text and "Traceback" not in text, text
    assert not out.exists()
    assert time.perf_counter() - started < 5  # nothing expanded or trained


@pytest.mark.parametrize(
    "content, named",
    [
        (BOMB, "expands to more than"),  # 9^9 values if expanded: refused in milliseconds
        ("a: &a [*a]\n", "self-referencing alias"),
        ("model: &m {width: *m}\n", "self-referencing alias"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("model: {width: [unclosed\n", "not valid YAML"),
        ("!!python/object:os.system {}\n", "not valid YAML"),
        (b"\xff\xfe\x00garbage", "not valid YAML"),
    ],
)
def test_bad_config_files_exit_2(capsys, tmp_path, content, named):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    started = time.perf_counter()
    rc, text = train_inprocess(capsys, path, "--out", tmp_path / "run")
    assert rc == 2 and named in text and "Traceback" not in text, text
    assert time.perf_counter() - started < 2 and not (tmp_path / "run").exists()


def test_safe_yaml_reads_numbers_as_numbers_and_presets_unchanged():
    assert safe_yaml.load("lr: 1e-3\nb: 2E+5\nc: 1.5\nd: '1e-3'") == {"lr": 0.001, "b": 2e5, "c": 1.5, "d": "1e-3"}
    assert safe_yaml.load(json.dumps({"lr": 2.0**-20})) == {"lr": 2.0**-20}  # what the DAG pipes in
    for name in ("smoke", "tiny", "paper"):  # anchors and aliases of real presets still load
        text = preset_path(name).read_text()
        assert safe_yaml.load(text) == yaml.safe_load(text), name


# --------------------------------------------------------------------------------------------
# (2) and (6): the run folder


def write_folder(out: Path, config: dict | None = None, summary=None, extra: dict | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(resolve_config(config))))
    if summary is not None:
        (out / "summary.json").write_text(summary if isinstance(summary, str) else json.dumps(summary))
    for name, text in (extra or {}).items():
        (out / name).write_text(text)


def test_out_that_is_not_a_run_folder_is_refused_and_left_alone(capsys, cfg, tmp_path):
    user = tmp_path / "mine"
    write_folder(user, extra={"thesis.tex": "precious"})
    rc, text = train_inprocess(capsys, cfg, "--out", user)
    assert rc == 2 and "not a run folder" in text and "thesis.tex" in text
    assert sorted(p.name for p in user.iterdir()) == ["thesis.tex"]
    assert (user / "thesis.tex").read_text() == "precious"

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    rc, text = train_inprocess(capsys, cfg, "--out", a_file)
    assert rc == 2 and "is a file" in text and a_file.read_text() == "x"

    rc, text = train_inprocess(capsys, cfg, "--out", a_file / "sub" / "run")  # cannot be created
    assert rc == 2 and f"{a_file} is a file" in text and "Traceback" not in text


@pytest.mark.parametrize(
    "case, named",
    [
        ("garbage config", "config.yaml: not a readable config"),
        ("bomb config", "config.yaml: not a readable config"),
        ("other config", "holds a different config"),
        ("garbage summary", "summary.json: not a readable summary"),
        ("summary of another cell", "not the folder's cell"),
        ("summary, no config", "no config.yaml"),
    ],
)
def test_run_folder_that_does_not_read_back_is_named(capsys, cfg, tmp_path, case, named):
    out = tmp_path / "run"
    cell = config_hash(resolve_config(TINY))
    if case == "garbage config":
        write_folder(out, extra={"config.yaml": "{{{: ["})
    elif case == "bomb config":
        write_folder(out, extra={"config.yaml": BOMB})
    elif case == "other config":
        write_folder(out, config={**TINY, "parametrization": "mup"})
    elif case == "garbage summary":
        write_folder(out, config=TINY, summary="\x00\x01 not json")
    elif case == "summary of another cell":
        write_folder(
            out, config=TINY, summary={"cell": "0" * 12, "config_hash": "0" * 12, "steps_done": 4, "diverged": False}
        )
    else:
        write_folder(out, summary={"cell": cell, "config_hash": cell})
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    rc, text = train_inprocess(capsys, cfg, "--out", out)
    assert rc == 2 and named in text and "Traceback" not in text, text
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"} == before


def complete_folder(out: Path, config: dict = TINY, steps_done: int = 4, diverged: bool = False, loss=3.0) -> str:
    """A complete run folder as train.py leaves it (files only; nothing trained)."""
    cell = config_hash(resolve_config(config))
    write_folder(out, config=config)
    write_run_folder(out, cell, steps_done=steps_done, diverged=diverged, loss=loss, sweep=out.parent.name)
    return cell


@pytest.mark.parametrize(
    "damage, named",
    [
        ("truncate metrics", "metrics.csv: 3 rows"),
        ("delete metrics", "metrics.csv: missing"),
        ("delete rms", "rms.csv: missing"),
        ("garbage summary", "summary.json: not a readable summary"),
        ("missing folder", "not a complete run"),
    ],
)
def test_copy_from_a_damaged_run_is_refused(capsys, cfg, tmp_path, damage, named):
    src, out = tmp_path / "a" / "src", tmp_path / "b" / "out"
    complete_folder(src)
    if damage == "truncate metrics":
        lines = (src / "metrics.csv").read_text().splitlines(keepends=True)
        (src / "metrics.csv").write_text("".join(lines[:4]))
    elif damage == "delete metrics":
        (src / "metrics.csv").unlink()
    elif damage == "delete rms":
        (src / "rms.csv").unlink()
    elif damage == "garbage summary":
        (src / "summary.json").write_text("{")
    else:
        src = tmp_path / "nowhere"
    rc, text = train_inprocess(capsys, cfg, "--out", out, "--copy-from", src)
    assert rc == 2 and named in text and "Traceback" not in text, text
    assert not (out / "summary.json").exists()


def test_copy_from_an_intact_run_copies_it(capsys, cfg, tmp_path):
    src, out = tmp_path / "a" / "src", tmp_path / "b" / "out"
    cell = complete_folder(src)
    rc, text = train_inprocess(capsys, cfg, "--out", out, "--copy-from", src)
    assert rc == 0, text
    summary = read_summary(out / "summary.json", cell)
    assert summary["sweep"] == "b" and summary["copied_from"] == str(src)
    assert (out / "metrics.csv").read_bytes() == (src / "metrics.csv").read_bytes()


# --------------------------------------------------------------------------------------------
# (3) and (7): aggregation verifies what it reads; a diverged run has no final loss


def test_aggregate_names_a_damaged_run_and_drops_a_diverged_runs_loss(tmp_path, capsys):
    cells = expand_sweep("lr", {"blocks": [{"grid": {"train.lr": [1.0, 1e6]}}]}, TINY)
    runs, tables = tmp_path / "runs", tmp_path / "tables"
    good = runs / "lr" / cells[0].id
    complete_folder(good, cells[0].config_dict)
    complete_folder(runs / "lr" / cells[1].id, cells[1].config_dict, steps_done=0, diverged=True, loss=8.33)
    table = aggregate_sweep(cells, runs, tables)
    assert table["final_val_loss"].iloc[0] == 3.0 and math.isnan(table["final_val_loss"].iloc[1])
    assert pd.read_csv(tables / "lr.csv")["final_val_loss"].isna().tolist() == [False, True]

    lines = (good / "metrics.csv").read_text().splitlines(keepends=True)
    (good / "metrics.csv").write_text("".join(lines[:-1]))  # one step lost
    with pytest.raises(ReadBackError, match=r"metrics.csv: 4 rows, but the summary's steps_done = 4 needs 5"):
        aggregate_sweep(cells, runs, tables)
    (good / "metrics.csv").write_text("".join(lines))
    (good / "rms.csv").unlink()
    with pytest.raises(ReadBackError, match=r"rms.csv: missing"):
        aggregate_sweep(cells, runs, tables)
    (good / "summary.json").write_text("not json")
    with pytest.raises(ReadBackError, match=rf"{good / 'summary.json'}: not a readable summary"):
        aggregate_sweep(cells, runs, tables)


def test_read_summary_and_tables_checks():
    with pytest.raises(ReadBackError, match="steps_done or diverged"):
        read_summary_text({"cell": "c", "config_hash": "c", "steps_done": "4", "diverged": False})
    with pytest.raises(ReadBackError, match="config_hash is 'd'"):
        read_summary_text({"cell": "c", "config_hash": "d", "steps_done": 4, "diverged": False})
    with pytest.raises(ReadBackError, match="an object"):
        read_summary_text([1, 2])


def read_summary_text(summary) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "summary.json"
        path.write_text(json.dumps(summary))
        result = read_summary(path, "c")
        check_tables(Path(d), result)
        return result


# --------------------------------------------------------------------------------------------
# (4) and (5): preset errors before any job


PRESET_BASE = {
    "defaults": {"model": {"width": 32, "head_dim": 16}},
    "sweeps": {
        "lr": {
            "transfer": {"axis": "model.width"},
            "blocks": [{"grid": {"model.width": [32, 64], "train.lr": {"log2_range": [-2, 0, 1]}}}],
        }
    },
    "figures": {"transfer_width": ["lr"]},
}


def _bad_preset(case: str):
    p = json.loads(json.dumps(PRESET_BASE))
    lr = p["sweeps"]["lr"]
    if case == "axis":
        lr["transfer"]["axis"] = "model.widht"
    elif case == "hp":
        lr["transfer"]["hp"] = "train.learning_rate"
    elif case == "figure name":
        p["figures"]["transfer_widht"] = ["lr"]
    elif case == "figure sweep":
        p["figures"]["transfer_width"] = ["lr", "lr_widht"]
    elif case == "overflow":
        lr["blocks"][0]["grid"]["train.lr"] = {"log2_range": [0, 5000, 1]}
    elif case == "too many":
        lr["blocks"][0]["grid"]["train.lr"] = {"log2_range": [0, 100, 1e-6]}
    elif case == "log2_uniform":
        lr["blocks"][0] = {"random": {"n": 2, "seed": 0, "space": {"train.lr": {"log2_uniform": [0, 5000]}}}}
    return p


@pytest.mark.parametrize(
    "case, named",
    [
        ("axis", "sweeps.lr.transfer.axis: 'model.widht'"),
        ("hp", "sweeps.lr.transfer.hp: 'train.learning_rate'"),
        ("figure name", "figures.transfer_widht: no such figure"),
        ("figure sweep", "figures.transfer_width: sweep 'lr_widht' is not in the preset"),
        ("overflow", "grid.train.lr: log2_range exponents"),
        ("too many", "log2_range gives more than"),
        ("log2_uniform", "random.space.train.lr: log2_uniform"),
        ("bomb", "expands to more than"),
        ("self alias", "self-referencing alias"),
    ],
)
def test_bad_presets_fail_when_loaded(tmp_path, case, named):
    path = tmp_path / "bad.yaml"
    if case == "bomb":
        path.write_text(yaml.safe_dump(PRESET_BASE) + BOMB)
    elif case == "self alias":
        path.write_text(yaml.safe_dump(PRESET_BASE) + "extra: &x {a: *x}\n")
    else:
        path.write_text(yaml.safe_dump(_bad_preset(case)))
    started = time.perf_counter()
    with pytest.raises(PresetError, match=named.replace("(", r"\(").replace(".", r"\.")):
        load_preset(str(path))
    assert time.perf_counter() - started < 5
    assert load_preset(str(_write(tmp_path / "good.yaml", PRESET_BASE)))["sweeps"]  # the base itself is fine
    rc = cli_main(["cells", "--preset", str(path)])
    assert rc == 2


def _write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_aggregate_command_exits_2_naming_a_bad_summary(tmp_path, capsys, monkeypatch):
    preset = _write(tmp_path / "p.yaml", {**PRESET_BASE, "defaults": TINY, "figures": {}})
    cells = expand_sweep("lr", _bad_preset("none")["sweeps"]["lr"], TINY)
    for c in cells:
        complete_folder(tmp_path / "runs" / "lr" / c.id, c.config_dict)
    (tmp_path / "runs" / "lr" / cells[1].id / "summary.json").write_text("[")
    rc = aggregate_main(
        _Args(
            preset=str(preset),
            sweep=None,
            runs=str(tmp_path / "runs"),
            tables=str(tmp_path / "tables"),
            transfer_summary=None,
        )
    )
    assert rc == 2 and f"{cells[1].id}/summary.json: not a readable summary" in capsys.readouterr().err


class _Args:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_preset_figure_names_are_the_registrys():
    """A preset may name exactly the figures `umup-repro plot` draws: the catalog's."""
    from umup_repro.cli import build_parser
    from umup_repro.core.figure_catalog import PLOTTED
    from umup_repro.sweeps.preset_checks import check_preset

    plot = next(a for a in build_parser()._subparsers._group_actions[0].choices["plot"]._actions if a.dest == "name")
    assert set(plot.choices) == set(PLOTTED)
    for name in PLOTTED:
        check_preset({"figures": {name: []}}, "p")
    with pytest.raises(ValueError, match="no such figure"):
        check_preset({"figures": {"claims": []}}, "p")


def test_config_error_messages_name_the_field_directly():
    with pytest.raises(ConfigError, match=r"model\.ffn_ratio: 0\.001 gives an FFN width of 0"):
        resolve_config({"model": {"ffn_ratio": 0.001}})


def test_out_of_memory_is_a_named_error(capsys, cfg, tmp_path, monkeypatch):
    """Shapes within the bounds that still do not fit: exit 2 naming what to lower (the allocation
    failure is simulated; a real one takes the machine's memory)."""
    import umup_repro.training.train as train

    def no_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1099511627776 bytes")

    monkeypatch.setattr(train, "_train", no_memory)
    rc, text = train_inprocess(capsys, cfg, "--out", tmp_path / "run")
    assert rc == 2 and "out of memory" in text and "model.width" in text and "Traceback" not in text
