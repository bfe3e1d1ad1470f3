"""`--set KEY=VALUE` overrides, parsed in one place for every command that takes them (`train`,
`bench-data`), so both accept and refuse the same items with the same message."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from umup_repro.core import safe_yaml
from umup_repro.core.config import ConfigError


def parse_sets(items: Iterable[str]) -> dict[str, Any]:
    """{dotted key: value} of `--set` items, each value read as (bounded) YAML; ConfigError naming
    an item that is not key=value or whose value is not YAML."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            overrides[key.strip()] = safe_yaml.load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {err}") from None
    return overrides
