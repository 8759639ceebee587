"""Checks a PaperBench rubric tree and reports problems by human-readable node path.

Errors block saving a tree; warnings are shown but real PaperBench files must still import.
The rules follow PaperBench's own ``TaskNode.__post_init__`` (openai/frontier-evals,
paperbench/rubric/tasks.py) plus the checks an editor needs (empty requirements, zero-sum
weight groups, missing keys).

What the shared samples (../shared/data/paperbench) contain, checked with ``validate_json``:

- No file has an error. The only problem found is one warning: fixtures/hex_flag_context.json
  repeats an id (a child reuses its parent's id), so duplicate ids are warnings.
- Inner nodes carry ``"task_category": null`` (rubrics, judge_eval) or omit it (the root of
  hex_flag_context.json); both are fine. No inner node carries a category, no sibling group
  sums to weight 0, no requirements are empty, every weight is a positive int.
- judge_eval files have no ``finegrained_task_category`` key: absent is fine.
- PaperBench itself lists a fourth task category, "Subtree", that it sets at run time for
  experimental non-leaf grading; a leaf carrying it is a warning, not an error, so such
  trees can still be imported.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from apps.rubrics.paperbench import (
    REQUIRED_KEYS,
    FlatNode,
    flatten,
    json_type_name,
    leaf_mask,
    node_label,
    node_path,
)

TASK_CATEGORIES: tuple[str, ...] = ("Code Development", "Code Execution", "Result Analysis")
FINEGRAINED_TASK_CATEGORIES: tuple[str, ...] = (
    "Environment & Infrastructure Setup",
    "Dataset and Model Acquisition",
    "Data Processing & Preparation",
    "Method Implementation",
    "Experimental Setup",
    "Evaluation, Metrics & Benchmarking",
    "Logging, Analysis & Presentation",
)
# Set by PaperBench at run time for non-leaf grading; never written by rubric authors.
RUNTIME_TASK_CATEGORY = "Subtree"

Level = Literal["error", "warning"]


@dataclass(slots=True, frozen=True)
class Problem:
    level: Level
    path: str
    node_index: int | None
    code: str
    message: str


def problem_dict(problem: Problem, pks: list[int] | None = None) -> dict[str, Any]:
    """JSON shape of a problem; ``node`` is the draft row's pk when the draft is known."""
    pk = pks[problem.node_index] if pks is not None and problem.node_index is not None else None
    return {"level": problem.level, "code": problem.code, "path": problem.path, "message": problem.message,
            "node": pk}


def is_number(value: Any) -> bool:
    """JSON number check: bool is an int subclass in Python but not a weight."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_tree(nodes: list[FlatNode]) -> list[Problem]:
    """All problems in a flattened tree, in pre-order (duplicate-id warnings last).

    ``nodes`` must be shaped like ``flatten``'s output: ``nodes[i].index == i``.
    """
    problems: list[Problem] = []
    is_leaf = leaf_mask(nodes)
    for index, node in enumerate(nodes):
        problems.extend(_node_problems(nodes, index, node, is_leaf[index]))
    problems.extend(_zero_weight_groups(nodes, is_leaf))
    problems.sort(key=lambda p: -1 if p.node_index is None else p.node_index)
    problems.extend(_duplicate_ids(nodes))
    return problems


def validate_json(tree: Any) -> list[Problem]:
    """Structural checks on raw JSON (objects, sub_tasks lists), then ``validate_tree``."""
    structural = list(_structure_problems(tree))
    if structural:
        return structural
    return validate_tree(flatten(tree))


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.level == "error"]


def _node_problems(
    nodes: list[FlatNode], index: int, node: FlatNode, leaf: bool
) -> Iterator[Problem]:
    def problem(level: Level, code: str, message: str) -> Problem:
        return Problem(level, node_path(nodes, index), index, code, message)

    for key in REQUIRED_KEYS:
        if not node.has_key(key):
            yield problem("error", "missing_key", f"Missing required key {key!r}")

    if node.has_key("id") and (not isinstance(node.node_id, str) or not node.node_id):
        yield problem("error", "invalid_id", f"id must be a non-empty string, got {node.node_id!r}")

    if node.has_key("requirements"):
        if not isinstance(node.requirements, str):
            yield problem(
                "error",
                "requirements_not_string",
                f"requirements must be text, got {node.requirements!r}",
            )
        elif not node.requirements.strip():
            yield problem("error", "empty_requirements", "requirements are empty")

    if node.has_key("weight"):
        if not is_number(node.weight):
            yield problem(
                "error", "weight_not_number", f"weight must be a number, got {node.weight!r}"
            )
        elif node.weight < 0:
            yield problem(
                "error", "negative_weight", f"weight must not be negative, got {node.weight!r}"
            )

    category = node.task_category
    # PaperBench tests truthiness here, so "" counts as no category, like null.
    if not leaf:
        if category not in (None, ""):
            yield problem(
                "error",
                "category_on_inner_node",
                f"task_category {category!r} is only allowed on leaves (this node has sub_tasks)",
            )
    elif category in (None, ""):
        yield problem(
            "error",
            "missing_task_category",
            f"A leaf needs a task_category: one of {', '.join(TASK_CATEGORIES)}",
        )
    elif category == RUNTIME_TASK_CATEGORY:
        yield problem(
            "warning",
            "runtime_task_category",
            f"task_category {category!r} is set by PaperBench at run time, not by rubric authors",
        )
    elif category not in TASK_CATEGORIES:
        yield problem(
            "error",
            "unknown_task_category",
            f"Unknown task_category {category!r}; allowed: {', '.join(TASK_CATEGORIES)}",
        )

    fine = node.finegrained_task_category
    if fine is not None and fine not in FINEGRAINED_TASK_CATEGORIES:
        yield problem(
            "error",
            "unknown_finegrained_task_category",
            f"Unknown finegrained_task_category {fine!r}; "
            f"allowed: {'; '.join(FINEGRAINED_TASK_CATEGORIES)}",
        )


def _zero_weight_groups(nodes: list[FlatNode], is_leaf: list[bool]) -> Iterator[Problem]:
    # Sum each sibling group in one pass; a group with a non-numeric weight is already an error.
    totals: list[float] = [0.0] * len(nodes)
    broken = [False] * len(nodes)
    for node in nodes:
        if node.parent is None:
            continue
        if is_number(node.weight) and node.weight >= 0:
            totals[node.parent] += node.weight
        else:
            broken[node.parent] = True
    for index in range(len(nodes)):
        if not is_leaf[index] and not broken[index] and totals[index] == 0:
            yield Problem(
                "error",
                node_path(nodes, index),
                index,
                "zero_weight_sum",
                "The weights of this node's sub_tasks sum to 0, so none of them can count",
            )


def _duplicate_ids(nodes: list[FlatNode]) -> Iterator[Problem]:
    where: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        if isinstance(node.node_id, str) and node.node_id:
            where.setdefault(node.node_id, []).append(index)
    for node_id, indexes in where.items():
        if len(indexes) > 1:
            paths = "; ".join(node_path(nodes, i) for i in indexes)
            yield Problem(
                "warning",
                node_path(nodes, indexes[0]),
                indexes[0],
                "duplicate_id",
                f"id {node_id} appears {len(indexes)} times: {paths}",
            )


def _structure_problems(tree: Any) -> Iterator[Problem]:
    # Walks raw JSON, so it finds every structural fault, not just the first one flatten hits.
    stack: list[tuple[Any, str, str]] = [(tree, "", "root")]
    while stack:
        obj, number, path = stack.pop()
        if not isinstance(obj, dict):
            yield Problem(
                "error",
                path,
                None,
                "node_not_object",
                f"A rubric node must be a JSON object, got {json_type_name(obj)}",
            )
            continue
        if "sub_tasks" not in obj:
            continue
        children = obj["sub_tasks"]
        if not isinstance(children, list):
            yield Problem(
                "error",
                path,
                None,
                "sub_tasks_not_list",
                f"sub_tasks must be a list, got {json_type_name(children)}",
            )
            continue
        for pos in range(len(children) - 1, -1, -1):
            child = children[pos]
            child_number = f"{number}.{pos + 1}" if number else str(pos + 1)
            requirements = child.get("requirements") if isinstance(child, dict) else None
            stack.append(
                (child, child_number, f"{path} > {node_label(child_number, requirements)}")
            )
