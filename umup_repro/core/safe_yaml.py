"""Bounded YAML parsing for everything a user hands us: configs, presets, `--set` values, a run
folder's config.yaml.

`yaml.safe_load` refuses Python tags but expands aliases without limit: a 1 kB "alias bomb" of
nested aliases becomes billions of nodes once anything walks it (a deep copy, validation, JSON),
and a self-referencing alias (`a: &a [*a]`) becomes a cyclic object that recursion never leaves.
`load` composes the node graph first (cheap: an alias is a pointer), counts the nodes its full
expansion would have, refuses cycles and anything above `MAX_NODES`, and only then builds the
Python objects. A mapping that repeats a key is refused, naming the key and its lines (PyYAML keeps
the last one silently). It also reads YAML 1.2 floats without a dot (`1e-3`, JSON's `1e-05`) as floats,
not as the strings YAML 1.1 makes of them, so a number written either way is a number.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

MAX_NODES = 100_000  # a paper-sized preset expands to a few thousand nodes
MAX_DEPTH = 64


class YAMLLimitError(yaml.YAMLError):
    """A document whose expansion is cyclic, too large or too deep."""


class DuplicateKeyError(yaml.YAMLError):
    """A mapping that gives one key twice."""


class _Loader(yaml.SafeLoader):
    pass


# YAML 1.2 core-schema floats that YAML 1.1 reads as strings: 1e-3, 1E5, -2e+10 (no dot).
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _expanded_size(root: yaml.Node) -> int:
    """Nodes of the fully expanded document; YAMLLimitError on a cycle or past the bounds."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def visit(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise YAMLLimitError("a self-referencing alias (the document would be infinite)")
        if depth > MAX_DEPTH:
            raise YAMLLimitError(f"nested deeper than {MAX_DEPTH} levels")
        active.add(key)
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        total = 1
        for child in children:
            total += visit(child, depth + 1)
            if total > MAX_NODES:
                raise YAMLLimitError(f"expands to more than {MAX_NODES} values (nested aliases?)")
        active.discard(key)
        sizes[key] = total
        return total

    return visit(root, 0)


def _refuse_duplicate_keys(root: yaml.Node) -> None:
    """YAMLError naming a key given twice in one mapping, and both lines (PyYAML would keep the
    last silently: a sweep listed twice would lose one). Keys a merge (`<<: *base`) brings in
    may be overridden; those written out may not repeat."""
    seen_nodes: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key, _ in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                ident = (key.tag, key.value)
                if ident in first:
                    raise DuplicateKeyError(
                        f"duplicate key {key.value!r} on line {key.start_mark.line + 1} (first on line"
                        f" {first[ident] + 1}); each key may appear once in a mapping"
                    )
                first[ident] = key.start_mark.line
            stack.extend(n for pair in node.value for n in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def load(text: str) -> Any:
    """Parse one YAML document like `yaml.safe_load`, within the bounds above and refusing a key
    given twice in a mapping. Raises yaml.YAMLError (YAMLLimitError for the bounds,
    DuplicateKeyError) with a message the caller can show."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        _refuse_duplicate_keys(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()
