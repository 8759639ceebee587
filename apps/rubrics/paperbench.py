"""Exact PaperBench rubric JSON codec for node-based storage (pure Python, no Django).

A rubric tree is stored as a flat, pre-order list of ``FlatNode`` rows and exported back to
the exact JSON value it came from: ``json.dumps(unflatten(flatten(x))) == json.dumps(x)``,
key order included.

What the shared samples (../shared/data/paperbench, from openai/frontier-evals) contain:

- Every file's top level is a bare node: no wrapper object anywhere.
- rubric.json nodes use the key order id, requirements, weight, sub_tasks, task_category,
  finegrained_task_category; inner nodes carry ``"task_category": null``.
- judge_eval.json nodes use id, requirements, weight, score, valid_score, task_category,
  explanation, judge_metadata, sub_tasks (sub_tasks last, no finegrained_task_category);
  scores are floats (leaves 0.0 / 1.0), judge_metadata is null.
- fixtures/hex_flag_context.json: the root has no task_category key at all, and a child
  repeats its parent's id; its file also starts with a blank line (harmless for JSON).
- All weights are ints (1 to 10). Upstream, adaptive-pruning's rubric has an extra leaf key
  ``"result": "Pass"``, so unknown keys are kept in ``extra`` rather than dropped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from apps.core.domain import Invalid
from apps.core.untrusted import JsonTooDeep, loads_json

# PaperBench's own TaskNode.to_dict order: used for nodes that never came from a file.
CANONICAL_KEY_ORDER: tuple[str, ...] = (
    "id",
    "requirements",
    "weight",
    "sub_tasks",
    "task_category",
    "finegrained_task_category",
)
GRADED_KEYS: tuple[str, ...] = ("score", "valid_score", "explanation", "judge_metadata")
REQUIRED_KEYS: tuple[str, ...] = ("id", "requirements", "weight", "sub_tasks")

# JSON key -> FlatNode attribute, for every key that has its own column.
_FIELD_ATTR: dict[str, str] = {
    "id": "node_id",
    "requirements": "requirements",
    "weight": "weight",
    "task_category": "task_category",
    "finegrained_task_category": "finegrained_task_category",
    "score": "score",
    "valid_score": "valid_score",
    "explanation": "explanation",
    "judge_metadata": "judge_metadata",
}
_KNOWN_KEYS = frozenset(_FIELD_ATTR) | {"sub_tasks"}
_PATH_SNIPPET_CHARS = 40


class RubricFormatError(Invalid, ValueError):
    """The input is not a PaperBench rubric we can store (bad JSON or bad tree structure)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(slots=True)
class FlatNode:
    """One rubric node as a storage row; raw JSON values are kept exactly as parsed."""

    index: int
    parent: int | None
    position: int
    node_id: Any = None
    requirements: Any = None
    weight: Any = None
    task_category: Any = None
    finegrained_task_category: Any = None
    score: Any = None
    valid_score: Any = None
    explanation: Any = None
    judge_metadata: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    # None for nodes made in the editor: they export in CANONICAL_KEY_ORDER.
    key_order: list[str] | None = None

    def has_key(self, key: str) -> bool:
        """Whether the JSON node has ``key`` (absent and null differ in PaperBench files)."""
        if self.key_order is None:
            # Editor-made nodes export every canonical key, plus whatever else has been set.
            return key in CANONICAL_KEY_ORDER or key in self.extra or self._value(key) is not None
        return key in self.key_order

    def _value(self, key: str) -> Any:
        attr = _FIELD_ATTR.get(key)
        if attr is not None:
            return getattr(self, attr)
        return self.extra.get(key)


# ---------------------------------------------------------------------------------------------
# Parsing


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity, which are not JSON and cannot round-trip elsewhere.
    raise RubricFormatError(f"Invalid JSON: {name} is not a valid JSON number")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise RubricFormatError(f"Invalid JSON: number {text} is too large for a float")
    return value


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # A repeated key would be silently dropped and the export would differ from the file.
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise RubricFormatError(f"Invalid JSON: key {key!r} appears twice in one object")
            seen.add(key)
    return obj


def load_json_bytes(data: bytes) -> dict[str, Any]:
    """Parse rubric JSON bytes; ints stay int and floats stay float, so export is identical.
    Nesting is limited (KLONG_MAX_JSON_DEPTH): a rubric tree is recursive, a hostile one deep."""
    try:
        value = loads_json(
            data,
            parse_float=_parse_float,
            parse_constant=_reject_constant,
            object_pairs_hook=_no_duplicate_keys,
        )
    except JsonTooDeep as exc:
        raise RubricFormatError(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise RubricFormatError(
            f"Invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except UnicodeDecodeError as exc:
        raise RubricFormatError(f"Invalid JSON: not UTF-8 text ({exc.reason})") from None
    if not isinstance(value, dict):
        raise RubricFormatError(
            f"Invalid rubric: the top level must be a JSON object, not {json_type_name(value)}"
        )
    return value


def json_type_name(value: Any) -> str:
    """How a JSON value is named in messages: "null", "an array", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# ---------------------------------------------------------------------------------------------
# Paths


def node_label(number: str, requirements: Any) -> str:
    """``"2.1 Load CIFAR"``: dotted 1-based positions plus the start of the requirements."""
    if not isinstance(requirements, str):
        return number
    text = " ".join(requirements.split())
    if len(text) > _PATH_SNIPPET_CHARS:
        text = text[:_PATH_SNIPPET_CHARS].rstrip() + "…"
    return f"{number} {text}" if text else number


def node_number(nodes: list[FlatNode], index: int) -> str:
    """Dotted 1-based position of a node, e.g. ``"2.1"``; ``"root"`` for the root.

    Like the other helpers here, it needs ``nodes[i].index == i`` (what ``flatten`` makes).
    """
    parts: list[str] = []
    node = nodes[index]
    while node.parent is not None:
        parts.append(str(node.position + 1))
        node = nodes[node.parent]
    return ".".join(reversed(parts)) if parts else "root"


def node_path(nodes: list[FlatNode], index: int) -> str:
    """Human-readable path such as ``"root > 2 Data > 2.1 Load CIFAR"``."""
    chain: list[int] = []
    i: int | None = index
    while i is not None:
        chain.append(i)
        i = nodes[i].parent
    chain.reverse()
    labels = ["root"]
    numbers: list[str] = []
    for i in chain[1:]:
        numbers.append(str(nodes[i].position + 1))
        labels.append(node_label(".".join(numbers), nodes[i].requirements))
    return " > ".join(labels)


def _child_path(nodes: list[FlatNode], parent: int | None, position: int, obj: Any) -> str:
    # Path of a JSON node that could not become a FlatNode (only needed on errors).
    if parent is None:
        return "root"
    parent_number = node_number(nodes, parent)
    number = str(position + 1) if parent_number == "root" else f"{parent_number}.{position + 1}"
    requirements = obj.get("requirements") if isinstance(obj, dict) else None
    return f"{node_path(nodes, parent)} > {node_label(number, requirements)}"


# ---------------------------------------------------------------------------------------------
# Flatten / unflatten


def flatten(tree: dict[str, Any]) -> list[FlatNode]:
    """Pre-order list of nodes; ``nodes[i].index == i`` and parents come before children."""
    nodes: list[FlatNode] = []
    # Explicit stack rather than recursion: editor-made trees may be arbitrarily deep.
    stack: list[tuple[Any, int | None, int]] = [(tree, None, 0)]
    known = _KNOWN_KEYS
    while stack:
        obj, parent, position = stack.pop()
        if not isinstance(obj, dict):
            path = _child_path(nodes, parent, position, obj)
            raise RubricFormatError(
                f"{path}: a rubric node must be a JSON object, not {json_type_name(obj)}"
            )
        get = obj.get
        index = len(nodes)
        nodes.append(
            FlatNode(
                index,
                parent,
                position,
                get("id"),
                get("requirements"),
                get("weight"),
                get("task_category"),
                get("finegrained_task_category"),
                get("score"),
                get("valid_score"),
                get("explanation"),
                get("judge_metadata"),
                {k: v for k, v in obj.items() if k not in known},
                list(obj),
            )
        )
        if "sub_tasks" not in obj:
            continue
        children = obj["sub_tasks"]
        if not isinstance(children, list):
            path = node_path(nodes, index)
            raise RubricFormatError(
                f"{path}: sub_tasks must be a list, not {json_type_name(children)}"
            )
        # Pushed in reverse so the first child is popped (numbered) first.
        for pos in range(len(children) - 1, -1, -1):
            stack.append((children[pos], index, pos))
    return nodes


def _export_keys(node: FlatNode, has_children: bool) -> list[str]:
    if node.key_order is None:
        keys = list(CANONICAL_KEY_ORDER)
        keys.extend(k for k in GRADED_KEYS if getattr(node, k) is not None)
        keys.extend(node.extra)
        return keys
    keys = node.key_order
    present = set(keys)
    missing = [
        k
        for k in (*CANONICAL_KEY_ORDER, *GRADED_KEYS)
        if k not in present
        and (
            (k == "sub_tasks" and has_children) or (k != "sub_tasks" and node._value(k) is not None)
        )
    ]
    missing.extend(k for k in node.extra if k not in present)
    # Keys set in the editor after import go after the file's own keys.
    return keys + missing if missing else keys


def unflatten(nodes: list[FlatNode]) -> dict[str, Any]:
    """Rebuild the PaperBench JSON value; children are ordered by ``position``."""
    if not nodes:
        raise RubricFormatError("An empty node list has no root")
    by_index = {n.index: n for n in nodes}
    if len(by_index) != len(nodes):
        raise RubricFormatError("Node indexes must be unique")
    children: dict[int, list[FlatNode]] = {}
    root: FlatNode | None = None
    for n in nodes:
        if n.parent is None:
            if root is not None:
                raise RubricFormatError(f"Two roots: nodes {root.index} and {n.index}")
            root = n
        elif n.parent not in by_index:
            raise RubricFormatError(f"Node {n.index} has unknown parent {n.parent}")
        else:
            children.setdefault(n.parent, []).append(n)
    if root is None:
        raise RubricFormatError("No root node (a node whose parent is None)")

    objs: dict[int, dict[str, Any]] = {}
    lists: dict[int, list[Any]] = {}
    field_attr = _FIELD_ATTR
    for n in nodes:
        kids = children.get(n.index)
        obj: dict[str, Any] = {}
        for key in _export_keys(n, kids is not None):
            if key == "sub_tasks":
                obj[key] = lists[n.index] = []
            elif key in field_attr:
                obj[key] = getattr(n, field_attr[key])
            else:
                obj[key] = n.extra.get(key)
        objs[n.index] = obj

    for parent_index, kids in children.items():
        if any(kids[i].position > kids[i + 1].position for i in range(len(kids) - 1)):
            kids.sort(key=lambda k: k.position)
        # _export_keys always emits sub_tasks for a node with children, so the list exists.
        lists[parent_index].extend(objs[k.index] for k in kids)
    if not _all_reach_root(nodes, root.index, children):
        raise RubricFormatError("Parent links form a cycle: some nodes do not reach the root")
    return objs[root.index]


def _all_reach_root(nodes: list[FlatNode], root: int, children: dict[int, list[FlatNode]]) -> bool:
    # Pre-order lists (what flatten makes) have parent < index, which rules out cycles.
    if all(n.parent is None or n.parent < n.index for n in nodes):
        return True
    seen = 1
    stack = [root]
    while stack:
        kids = children.get(stack.pop(), ())
        seen += len(kids)
        stack.extend(k.index for k in kids)
    return seen == len(nodes)


def leaf_mask(nodes: list[FlatNode]) -> list[bool]:
    """``True`` for nodes with no children (pre-order list as made by ``flatten``)."""
    is_leaf = [True] * len(nodes)
    for n in nodes:
        if n.parent is not None:
            is_leaf[n.parent] = False
    return is_leaf
