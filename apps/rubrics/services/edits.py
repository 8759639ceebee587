"""Node edits on the draft: change a node's fields, add, move, delete and duplicate subtrees.

Structural edits (add, move, delete, duplicate) lock the paper row first so two curators'
structural changes never interleave; content edits are a single conditional UPDATE on the
node's ``version`` counter (stale -> ``StaleNode``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import F

from apps.papers.models import Paper
from apps.rubrics.models import RubricNode
from apps.rubrics.paperbench import FlatNode, RubricFormatError, flatten, unflatten
from apps.rubrics.services.errors import NodeNotFound, StaleNode, TreeEditError
from apps.rubrics.services.store import DraftTree, delete_draft_rows, insert_flat, load_draft, lock_paper, rows_in_order
from apps.rubrics.validation import FINEGRAINED_TASK_CATEGORIES, RUNTIME_TASK_CATEGORY, TASK_CATEGORIES, is_number

# The columns a curator may edit on one node (graded fields come only from imported files).
EDITABLE_FIELDS: tuple[str, ...] = ("requirements", "weight", "task_category", "finegrained_task_category")


def _check_value(name: str, value: Any) -> Any:
    if name == "requirements":
        if not isinstance(value, str):
            raise TreeEditError("requirements must be text")
        return value
    if name == "weight":
        if not is_number(value) or value < 0:
            raise TreeEditError("weight must be a number >= 0")
        # 2.0 -> 2: PaperBench files use ints, and a curator typing "2" means the int.
        return int(value) if isinstance(value, float) and value.is_integer() else value
    if name == "task_category":
        if value in ("", None):
            return None
        if value not in (*TASK_CATEGORIES, RUNTIME_TASK_CATEGORY):
            raise TreeEditError(f"task_category must be one of {', '.join(TASK_CATEGORIES)}")
        return value
    if name == "finegrained_task_category":
        if value in ("", None):
            return None
        if value not in FINEGRAINED_TASK_CATEGORIES:
            raise TreeEditError("unknown finegrained_task_category")
        return value
    raise TreeEditError(f"{name} cannot be edited")


def _get_node(paper: Paper, pk: int) -> RubricNode:
    node = RubricNode.objects.filter(paper=paper, pk=pk).first()
    if node is None:
        raise NodeNotFound(f"node {pk} is not in this rubric (deleted, or the tree was replaced)")
    return node


@transaction.atomic
def update_node(paper: Paper, pk: int, expected_version: int, changes: Mapping[str, Any]) -> RubricNode:
    """Change some editable fields of one node, if nobody changed it since ``expected_version``."""
    clean = {name: _check_value(name, value) for name, value in changes.items()}
    if not clean:
        raise TreeEditError("nothing to change")
    # One conditional UPDATE: the version check and the write cannot be split by another edit.
    updated = RubricNode.objects.filter(paper=paper, pk=pk, version=expected_version).update(
        **clean, version=F("version") + 1
    )
    node = _get_node(paper, pk)
    if not updated:
        raise StaleNode(node)
    return node


# More than any real tree has nodes (PaperBench's largest: ~2,300); one request stays bounded.
MAX_BULK_EDITS = 10_000


@transaction.atomic
def update_nodes(paper: Paper, edits: Sequence[tuple[int, int, Mapping[str, Any]]]) -> list[RubricNode]:
    """Several ``update_node`` edits as one: each ``(pk, expected_version, changes)``, all or none.

    A bulk category edit and its undo go through here. One stale node (``StaleNode``) or a
    missing one (``NodeNotFound``) rolls every edit back.
    """
    if not edits:
        raise TreeEditError("nothing to change")
    if len(edits) > MAX_BULK_EDITS:
        raise TreeEditError(f"at most {MAX_BULK_EDITS} nodes can be changed at once")
    if len({pk for pk, _, _ in edits}) != len(edits):
        raise TreeEditError("a node is named twice")
    for pk, expected_version, changes in edits:
        clean = {name: _check_value(name, value) for name, value in changes.items()}
        if not clean:
            raise TreeEditError(f"nothing to change on node {pk}")
        # The same conditional UPDATE as update_node: the atomic block undoes the earlier ones.
        if not RubricNode.objects.filter(paper=paper, pk=pk, version=expected_version).update(
                **clean, version=F("version") + 1):
            raise StaleNode(_get_node(paper, pk))
    return rows_in_order([pk for pk, _, _ in edits])


def _claim(paper: Paper, pk: int, expected_version: int | None) -> RubricNode:
    node = _get_node(paper, pk)
    if expected_version is not None and node.version != expected_version:
        raise StaleNode(node)
    return node


def new_node_json(requirements: str = "", weight: float = 1, task_category: str | None = "Code Development",
                  finegrained_task_category: str | None = None) -> dict[str, Any]:
    """A fresh leaf in PaperBench's own key order, with a new uuid4 id."""
    return {"id": str(uuid.uuid4()), "requirements": requirements, "weight": weight, "sub_tasks": [],
            "task_category": task_category, "finegrained_task_category": finegrained_task_category}


@transaction.atomic
def add_subtree(paper: Paper, parent_pk: int, position: int | None, subtree: dict[str, Any],
                *, editor_made: bool = False) -> list[RubricNode]:
    """Insert a PaperBench subtree under ``parent_pk`` at ``position`` (None: last).

    ``editor_made`` nodes get no recorded key order, so they export in PaperBench's canonical
    order; pasted or undone subtrees keep the key order they were exported with.
    """
    lock_paper(paper)
    parent = _get_node(paper, parent_pk)
    try:
        nodes = flatten(subtree)
    except RubricFormatError as exc:
        raise TreeEditError(exc.message) from None
    for n in nodes:
        if not isinstance(n.node_id, str) or not n.node_id:
            raise TreeEditError("every node needs a non-empty string id")
        for name in EDITABLE_FIELDS:
            setattr(n, name, _check_value(name, getattr(n, name)))
        if editor_made:
            n.key_order = None
    count = RubricNode.objects.filter(parent=parent).count()
    position = count if position is None else max(0, min(int(position), count))
    RubricNode.objects.filter(parent=parent, position__gte=position).update(position=F("position") + 1)
    RubricNode.objects.filter(pk=parent.pk).update(version=F("version") + 1)
    return rows_in_order(insert_flat(paper, nodes, parent.pk, position))


@transaction.atomic
def add_node(paper: Paper, parent_pk: int, position: int | None = None, **fields: Any) -> RubricNode:
    """Add one new leaf (fresh uuid4 id) under ``parent_pk``."""
    defaults = new_node_json()
    for name, value in fields.items():
        if name not in EDITABLE_FIELDS:
            raise TreeEditError(f"{name} cannot be set on a new node")
        defaults[name] = value
    return add_subtree(paper, parent_pk, position, defaults, editor_made=True)[0]


def _subtree_indexes(draft: DraftTree, index: int) -> list[int]:
    # Pre-order: a subtree is a contiguous run starting at its root.
    nodes = draft.nodes
    end = index + 1
    inside = {index}
    while end < len(nodes) and nodes[end].parent in inside:
        inside.add(end)
        end += 1
    return list(range(index, end))


def subtree_json(draft: DraftTree, index: int) -> dict[str, Any]:
    """The PaperBench JSON of the subtree rooted at draft node ``index``."""
    indexes = _subtree_indexes(draft, index)
    base = indexes[0]
    flat: list[FlatNode] = []
    for i in indexes:
        n = draft.nodes[i]
        parent = None if i == base else n.parent - base
        flat.append(FlatNode(i - base, parent, n.position, n.node_id, n.requirements, n.weight, n.task_category,
                             n.finegrained_task_category, n.score, n.valid_score, n.explanation,
                             n.judge_metadata, dict(n.extra), n.key_order))
    return unflatten(flat)


@dataclass(slots=True)
class DeletedSubtree:
    parent: int
    position: int
    subtree: dict[str, Any]
    pks: list[int]


@transaction.atomic
def delete_subtree(paper: Paper, pk: int, expected_version: int | None) -> DeletedSubtree:
    """Delete a node and everything under it; returns what is needed to put it back (undo)."""
    lock_paper(paper)
    node = _claim(paper, pk, expected_version)
    if node.parent_id is None:
        raise TreeEditError("the root cannot be deleted")
    draft = load_draft(paper)
    index = draft.index_of[pk]
    indexes = _subtree_indexes(draft, index)
    removed = DeletedSubtree(node.parent_id, node.position, subtree_json(draft, index),
                             [draft.pks[i] for i in indexes])
    delete_draft_rows(RubricNode.objects.filter(pk__in=removed.pks))
    RubricNode.objects.filter(parent_id=node.parent_id, position__gt=node.position).update(
        position=F("position") - 1
    )
    RubricNode.objects.filter(pk=node.parent_id).update(version=F("version") + 1)
    return removed


@transaction.atomic
def move_node(paper: Paper, pk: int, expected_version: int | None, new_parent_pk: int,
              position: int | None = None) -> RubricNode:
    """Move a node (with its subtree) under ``new_parent_pk`` at ``position``; cycles are refused."""
    lock_paper(paper)
    node = _claim(paper, pk, expected_version)
    if node.parent_id is None:
        raise TreeEditError("the root cannot be moved")
    new_parent = _get_node(paper, new_parent_pk)
    parents = dict(RubricNode.objects.filter(paper=paper).values_list("id", "parent_id"))
    walk: int | None = new_parent.pk
    while walk is not None:
        if walk == node.pk:
            raise TreeEditError("a node cannot move into its own subtree")
        walk = parents.get(walk)
    RubricNode.objects.filter(parent_id=node.parent_id, position__gt=node.position).update(
        position=F("position") - 1
    )
    count = RubricNode.objects.filter(parent=new_parent).exclude(pk=node.pk).count()
    position = count if position is None else max(0, min(int(position), count))
    RubricNode.objects.filter(parent=new_parent, position__gte=position).exclude(pk=node.pk).update(
        position=F("position") + 1
    )
    RubricNode.objects.filter(pk=node.pk).update(parent=new_parent, position=position, version=F("version") + 1)
    node.refresh_from_db()
    return node


@transaction.atomic
def duplicate_subtree(paper: Paper, pk: int) -> list[RubricNode]:
    """Copy a subtree right after itself; every copied node gets a fresh uuid4 id."""
    node = _get_node(paper, pk)
    if node.parent_id is None:
        raise TreeEditError("the root cannot be duplicated")
    draft = load_draft(paper)
    copy = subtree_json(draft, draft.index_of[pk])
    stack = [copy]
    while stack:
        obj = stack.pop()
        obj["id"] = str(uuid.uuid4())
        stack.extend(obj.get("sub_tasks") or [])
    return add_subtree(paper, node.parent_id, node.position + 1, copy)
