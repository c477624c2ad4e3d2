"""YAML loading without YAML 1.1's traps: ``yes``/``no``/``on``/``off`` stay strings (only true/false
are booleans), ``1e-5`` is a number, and a key written twice in one mapping is an error.

Aliases are allowed but bounded: the document's node graph is measured with every alias expanded before
anything is constructed, so a "billion laughs" file (a few lines whose aliases expand to 10^9 nodes) is an
error instead of a hang, and so is a recursive alias (``&a [*a]``)."""

from __future__ import annotations

import re
from typing import Any

import yaml


class StrictLoader(yaml.SafeLoader):
    pass


_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)

StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


class DuplicateKey(yaml.YAMLError):
    pass


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in out:
            line = key_node.start_mark.line + 1
            raise DuplicateKey(f"key {key!r} appears twice (line {line})")
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class TooLarge(yaml.YAMLError):
    pass


class RecursiveAlias(yaml.YAMLError):
    pass


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def expanded_size(root: yaml.Node, max_nodes: int) -> int:
    """Nodes of the document with every alias expanded (shared nodes counted each time they are used),
    computed without expanding anything; raises TooLarge above ``max_nodes``, RecursiveAlias for an anchor
    used inside itself."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()  # the ancestors of the node being expanded (an iterative DFS)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            in_progress.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > max_nodes:
                raise TooLarge(f"more than {max_nodes} YAML nodes once aliases are expanded")
            continue
        if key in sizes:
            continue
        if key in in_progress:
            raise RecursiveAlias("a recursive alias (an anchor used inside itself)")
        in_progress.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def loads(text: str, max_nodes: int | None = None) -> Any:
    """Parse one YAML document; with ``max_nodes``, refuse documents larger than that once expanded."""
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if max_nodes is not None:
            expanded_size(node, max_nodes)
        return loader.construct_document(node)
    finally:
        loader.dispose()
