"""Presets: finding one by name or path, loading it under Snakemake's config, and checking it
(JSON Schema, then `preset_checks`) before any cell is expanded. A preset's name is the stem of
`config/presets/<name>.yaml` in the working directory (a workflow copy) or in this package's data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from umup_repro.core import safe_yaml
from umup_repro.sweeps.preset_checks import check_preset

# Package data (links to config/ and workflow/schemas/ in the checkout, copied into a wheel), so a
# non-editable install finds the presets and the schema too.
RESOURCES = Path(__file__).resolve().parent.parent / "resources"
PRESET_DIR = RESOURCES / "presets"
SCHEMA = RESOURCES / "config.schema.yaml"


class PresetError(ValueError):
    """A preset that cannot be expanded; the message names the preset, sweep and field."""


def preset_names() -> list[str]:
    return sorted({p.stem for d in (Path("config/presets"), PRESET_DIR) for p in d.glob("*.yaml")})


def preset_path(preset: str) -> Path:
    """A preset name (`tiny`) or a path to a preset file."""
    if preset.endswith((".yaml", ".yml")) or os.sep in preset:
        path = Path(preset)
    else:  # the working directory's presets first (a workflow copy), then this checkout's
        path = Path("config/presets") / f"{preset}.yaml"
        if not path.is_file():
            path = PRESET_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise PresetError(
            f"preset: unknown preset {preset!r}; allowed: {', '.join(preset_names())}"
            " (or a path to a preset .yaml file)"
        )
    return path


def load_preset(config: Mapping[str, Any] | str) -> dict:
    """The workflow config: the selected preset's contents under the keys of `config`.

    `config` is what Snakemake loaded (config/config.yaml plus `--config`), or a preset name.
    Keys given in `config` other than `preset` override the preset's top-level keys.
    """
    config = {"preset": config} if isinstance(config, str) else dict(config)
    if "preset" not in config:
        raise PresetError(f"preset: missing; allowed: {', '.join(preset_names())}")
    path = preset_path(str(config["preset"]))
    try:
        preset = safe_yaml.load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise PresetError(f"preset {path}: not valid YAML: {err}") from None
    if not isinstance(preset, dict):
        raise PresetError(f"preset {path}: expected a mapping at the top level, got {type(preset).__name__}")
    merged = {**preset, **config}
    validate_schema(merged, where=f"preset {path.stem}")
    try:
        check_preset(merged, where=f"preset {path.stem}")
    except ValueError as err:
        raise PresetError(str(err)) from None
    return merged


def validate_schema(config: Mapping[str, Any], where: str = "config") -> None:
    """Check the workflow config against workflow/schemas/config.schema.yaml (JSON Schema)."""
    import jsonschema

    schema = safe_yaml.load(SCHEMA.read_text(encoding="utf-8"))
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(dict(config)), key=lambda e: list(e.path))
    if errors:
        lines = []
        for e in errors[:5]:
            loc = ".".join(str(p) for p in e.absolute_path) or "(top level)"
            lines.append(f"{loc}: {e.message}")
        raise PresetError(f"{where}: invalid workflow config: " + "; ".join(lines))  # one line


def default_preset() -> str:
    """The preset config/config.yaml selects (the working directory's, else this checkout's)."""
    path = Path("config/config.yaml") if Path("config/config.yaml").is_file() else RESOURCES / "config.yaml"
    return str(safe_yaml.load(path.read_text(encoding="utf-8"))["preset"])
