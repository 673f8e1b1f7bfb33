"""Guards for a rules document before anything is built from it, and helpers to read its YAML nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.representer import SafeRepresenter

# Aliases let YAML reuse a node many times; this caps the expanded size (a "billion laughs" document).
MAX_EXPANDED_NODES = 50_000
MAX_DEPTH = 64  # rules are a few levels deep; PyYAML composes and constructs recursively, so depth must be bounded

NULL_TAG = "tag:yaml.org,2002:null"
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a condition: its line (None for JSON given as an object), path and message."""

    line: int | None
    where: str
    message: str


def node_line(node: Node | None) -> int | None:
    """1-based line of a node, None when it was not parsed from text."""
    mark = getattr(node, "start_mark", None)
    return mark.line + 1 if mark is not None else None


def node_kind(node: Node) -> str:
    """How a node reads in an error message."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == NULL_TAG:
        return "empty"
    return f"{node.value!r}"


def is_null(node: Node | None) -> bool:
    """True for an absent or explicitly empty YAML value."""
    return node is None or (isinstance(node, ScalarNode) and node.tag == NULL_TAG)


def expanded_size(root: Node) -> int:
    """Number of nodes once aliases are expanded, computed without expanding them."""
    memo: dict[int, int] = {}

    def size(node: Node) -> int:
        known = memo.get(id(node))
        if known is not None:
            return known
        memo[id(node)] = 1  # a recursive alias counts once instead of looping
        if isinstance(node, MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:
            total = 1
        memo[id(node)] = total
        return total

    return size(root)


def document_problems(root: Node, what: str) -> list[Problem]:
    """Refuse what a rules document has no use for before anything is built from it.

    Alias expansion beyond MAX_EXPANDED_NODES (a "billion laughs" file is a few hundred bytes that expand
    to billions of values once constructed, hashed or walked), and explicit tags (!!python/..., !custom).
    """
    if expanded_size(root) > MAX_EXPANDED_NODES:
        return [
            Problem(None, "<document>", f"{what} is too large (over {MAX_EXPANDED_NODES} values once aliases expand)")
        ]
    problems: list[Problem] = []
    seen: set[int] = set()
    stack: list[tuple[Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if depth > MAX_DEPTH:
            return [Problem(node_line(node), "<document>", f"{what} is nested deeper than {MAX_DEPTH} levels")]
        if node.tag == "tag:yaml.org,2002:merge":
            problems.append(
                Problem(node_line(node), "<document>", "YAML merge keys (<<) are not supported; repeat the keys")
            )
        elif node.tag not in _PLAIN_TAGS:
            problems.append(Problem(node_line(node), "<document>", f"unsupported YAML tag {node.tag!r}"))
        if isinstance(node, MappingNode):
            stack.extend((item, depth + 1) for pair in node.value for item in pair)
        elif isinstance(node, SequenceNode):
            stack.extend((item, depth + 1) for item in node.value)
    return problems


def compose(text: str, loader: type[yaml.SafeLoader], what: str) -> Node | None:
    """The root node of YAML text; a document nested so deep that PyYAML's recursive composer gives up is refused
    like any other unusable document, not left to surface as a RecursionError (a 500)."""
    parser = loader(text)
    try:
        return parser.get_single_node()
    except RecursionError:
        too_deep = Problem(None, "<document>", f"{what} is nested deeper than {MAX_DEPTH} levels")
        raise DocumentRefused([too_deep]) from None
    finally:
        parser.dispose()


class DocumentRefused(ValueError):
    """A rules document refused before construction (alias bomb, explicit tags); `problems` say why."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(problem.message for problem in problems))
        self.problems = problems


def load_document(text: str, loader: type[yaml.SafeLoader], what: str) -> tuple[Node | None, Any]:
    """Parse YAML (or JSON) text into its root node and its data, refusing alias bombs and tags first.

    Raises DocumentRefused, or yaml.YAMLError for text that is not YAML at all.
    """
    root = compose(text, loader, what)
    if root is None:
        return None, None
    refused = document_problems(root, what)
    if refused:
        raise DocumentRefused(refused)
    return root, loader("").construct_document(root)


def represent(data: Any) -> Node:
    """The node tree of already-parsed data (a JSON object), so it compiles like text (without lines)."""
    return SafeRepresenter(sort_keys=False).represent_data(data)


def child(node: Node | None, key: str) -> Node | None:
    """The value node under `key` in a mapping node (the last one, as construction keeps), or None."""
    found = None
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == key:
                found = value_node
    return found
