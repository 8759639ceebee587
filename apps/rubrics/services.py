"""Rubric trees in the database: parse, store as a node draft, version, diff, restore, edit.

Every write the pages, the API and the management commands make goes through a function
here, each in ``transaction.atomic``. Structural edits (add, move, delete, duplicate, replace)
lock the paper row first so two curators' structural changes never interleave; content edits
are a single conditional UPDATE on the node's ``version`` counter (stale -> ``StaleNode``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, F, Max, Sum

from apps.papers.models import Paper
from apps.rubrics.models import ExactJSONField, RubricNode, RubricVersion, dumps_compact, loads_json_column
from apps.rubrics.paperbench import (
    FlatNode,
    RubricFormatError,
    flatten,
    leaf_mask,
    load_json_bytes,
    node_path,
    unflatten,
)
from apps.rubrics.scoring import ScoringError, ScoringPlan
from apps.rubrics.validation import (
    FINEGRAINED_TASK_CATEGORIES,
    RUNTIME_TASK_CATEGORY,
    TASK_CATEGORIES,
    Problem,
    errors,
    is_number,
    validate_json,
    validate_tree,
)

# The columns a curator may edit on one node (graded fields come only from imported files).
EDITABLE_FIELDS: tuple[str, ...] = ("requirements", "weight", "task_category", "finegrained_task_category")
_ROW_FIELDS: tuple[str, ...] = ("id", "parent_id", "position", "version", *RubricNode.CONTENT_FIELDS)
_JSON_COLUMNS = frozenset(f.name for f in RubricNode._meta.get_fields() if isinstance(f, ExactJSONField))


# ---------------------------------------------------------------------------------------------
# Errors the views turn into 4xx answers


class RubricRefused(ValueError):
    """A tree (file, version or restore) was refused whole; ``problems`` lists every reason."""

    def __init__(self, message: str, problems: list[Problem]) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems


class TreeEditError(ValueError):
    """An edit that makes no sense for this tree (cycle, second root, bad value): a 400."""


class NodeNotFound(LookupError):
    """The node is not in this paper's draft (deleted, or the draft was replaced)."""


class StaleNode(Exception):
    """The node changed since the client read it: a 409 carrying the current node."""

    def __init__(self, current: RubricNode) -> None:
        super().__init__(f"node {current.pk} is at version {current.version}")
        self.current = current


# ---------------------------------------------------------------------------------------------
# Hashing and parsing


def tree_hash(tree: Mapping[str, Any]) -> str:
    """Content hash of a PaperBench tree: key order counts, as it does for exact export."""
    return hashlib.sha256(dumps_compact(dict(tree)).encode()).hexdigest()


@dataclass(slots=True)
class ParsedRubric:
    tree: dict[str, Any]
    nodes: list[FlatNode]
    warnings: list[Problem]


def parse_rubric(data: bytes) -> ParsedRubric:
    """Parse and validate rubric JSON bytes; raises ``RubricRefused`` listing every error."""
    try:
        tree = load_json_bytes(data)
    except RubricFormatError as exc:
        raise RubricRefused(exc.message, [Problem("error", "file", None, "invalid_json", exc.message)]) from None
    return parse_rubric_value(tree)


def parse_rubric_value(tree: Any) -> ParsedRubric:
    problems = validate_json(tree)
    bad = errors(problems)
    if bad:
        raise RubricRefused(f"The rubric has {len(bad)} error{'s' if len(bad) != 1 else ''}", problems)
    return ParsedRubric(tree, flatten(tree), [p for p in problems if p.level == "warning"])


def problem_dict(problem: Problem, pks: list[int] | None = None) -> dict[str, Any]:
    """JSON shape of a problem; ``node`` is the draft row's pk when the draft is known."""
    pk = pks[problem.node_index] if pks is not None and problem.node_index is not None else None
    return {"level": problem.level, "code": problem.code, "path": problem.path, "message": problem.message,
            "node": pk}


# ---------------------------------------------------------------------------------------------
# The draft: node rows <-> flat pre-order list


@dataclass(slots=True)
class DraftTree:
    """A paper's draft in pre-order: ``nodes[i]`` is the FlatNode of row ``pks[i]``."""

    nodes: list[FlatNode]
    pks: list[int]
    versions: list[int]
    index_of: dict[int, int] = field(default_factory=dict)

    def export(self) -> dict[str, Any]:
        return unflatten(self.nodes)


def _draft_rows(paper_id: int) -> list[tuple]:
    """Every row of a draft as plain tuples, JSON columns decoded.

    The ORM's SQL, run on a plain cursor: Django's per-row, per-column converter calls cost
    more than the query itself on a 2,000-node tree.
    """
    query = RubricNode.objects.filter(paper_id=paper_id).values_list(*_ROW_FIELDS).query
    sql, params = query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        raw = cursor.fetchall()
    json_columns = [i for i, name in enumerate(_ROW_FIELDS) if name in _JSON_COLUMNS]
    rows = []
    for row in raw:
        row = list(row)
        for i in json_columns:
            if row[i] is not None:
                row[i] = loads_json_column(row[i])
        rows.append(tuple(row))
    return rows


def load_draft(paper: Paper | int) -> DraftTree:
    """Read the whole draft in one query and order it like ``flatten`` would."""
    paper_id = paper if isinstance(paper, int) else paper.pk
    rows = _draft_rows(paper_id)
    if not rows:
        raise NodeNotFound(f"paper {paper_id} has no rubric tree")
    children: dict[int | None, list[tuple]] = {}
    for row in rows:
        children.setdefault(row[1], []).append(row)
    roots = children.get(None, [])
    if len(roots) != 1:
        raise TreeEditError(f"the draft of paper {paper_id} has {len(roots)} roots")
    nodes: list[FlatNode] = []
    pks: list[int] = []
    versions: list[int] = []
    index_of: dict[int, int] = {}
    stack: list[tuple[tuple, int | None, int]] = [(roots[0], None, 0)]
    while stack:
        row, parent, position = stack.pop()
        index = len(nodes)
        pk = row[0]
        (node_id, requirements, weight, category, fine, score, valid, explanation, meta, extra, order) = row[4:]
        nodes.append(FlatNode(index, parent, position, node_id, requirements, weight, category, fine, score, valid,
                              explanation, meta, dict(extra or {}), list(order) if order is not None else None))
        pks.append(pk)
        versions.append(row[3])
        index_of[pk] = index
        kids = children.get(pk)
        if kids:
            kids.sort(key=lambda r: (r[2], r[0]))
            for pos in range(len(kids) - 1, -1, -1):
                stack.append((kids[pos], index, pos))
    return DraftTree(nodes, pks, versions, index_of)


def export_draft(paper: Paper | int) -> dict[str, Any]:
    return load_draft(paper).export()


def has_draft(paper: Paper) -> bool:
    return RubricNode.objects.filter(paper=paper).exists()


# Insert columns, in order; JSON columns are written as their text (see ExactJSONField).
_INSERT_COLUMNS: tuple[str, ...] = (
    "paper_id", "parent_id", "position", "version", "node_id", "requirements", "weight", "task_category",
    "finegrained_task_category", "score", "valid_score", "explanation", "judge_metadata", "extra", "key_order",
)


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _insert_flat(paper: Paper, nodes: list[FlatNode], parent_pk: int | None, position: int) -> list[int]:
    """Insert a flattened subtree under ``parent_pk`` at ``position``; returns pks in pre-order.

    One INSERT statement per depth level (executemany), since children need their parent's pk.
    Model instances and bulk_create cost several times the SQL itself on a 2,000-node tree, so
    rows go in as tuples; the new pks are read back by (parent, position), which is unique among
    the rows this call inserts (the paper row is locked, so no one else adds to this draft).
    """
    table = connection.ops.quote_name(RubricNode._meta.db_table)
    qn = connection.ops.quote_name
    insert = (f"INSERT INTO {table} ({', '.join(qn(c) for c in _INSERT_COLUMNS)}) "
              f"VALUES ({', '.join(['%s'] * len(_INSERT_COLUMNS))})")
    pks: list[int] = [0] * len(nodes)
    depth = [0] * len(nodes)
    levels: dict[int, list[int]] = {}
    for n in nodes:
        if n.parent is not None:
            depth[n.index] = depth[n.parent] + 1
        levels.setdefault(depth[n.index], []).append(n.index)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT MAX({qn('id')}) FROM {table}")
        floor = cursor.fetchone()[0] or 0
        for d in sorted(levels):
            batch = []
            for i in levels[d]:
                n = nodes[i]
                row_parent = parent_pk if n.parent is None else pks[n.parent]
                row_position = position if n.parent is None else n.position
                batch.append((paper.pk, row_parent, row_position, 1, n.node_id, n.requirements,
                              _json_text(n.weight), n.task_category, n.finegrained_task_category,
                              _json_text(n.score), _json_text(n.valid_score), _json_text(n.explanation),
                              _json_text(n.judge_metadata), _json_text(n.extra or {}), _json_text(n.key_order)))
            cursor.executemany(insert, batch)
            parents = sorted({row[1] for row in batch if row[1] is not None})
            where = f"{qn('paper_id')} = %s AND {qn('id')} > %s"
            params: list[Any] = [paper.pk, floor]
            if parents:
                where += f" AND {qn('parent_id')} IN ({', '.join(['%s'] * len(parents))})"
                params.extend(parents)
            else:
                where += f" AND {qn('parent_id')} IS NULL"
            cursor.execute(f"SELECT {qn('id')}, {qn('parent_id')}, {qn('position')} FROM {table} WHERE {where}",
                           params)
            new = {(parent, pos): pk for pk, parent, pos in cursor.fetchall()}
            for i, row in zip(levels[d], batch, strict=True):
                pks[i] = new[(row[1], row[2])]
    return pks


def _rows_in_order(pks: list[int]) -> list[RubricNode]:
    by_pk = RubricNode.objects.in_bulk(pks)
    return [by_pk[pk] for pk in pks]


@transaction.atomic
def replace_draft(paper: Paper, nodes: list[FlatNode]) -> list[int]:
    """Make ``nodes`` (a whole flattened tree) the paper's draft, dropping the old one."""
    Paper.objects.select_for_update().filter(pk=paper.pk).first()
    # One DELETE for every row of the draft: nothing else points at draft rows, and the ORM's
    # cascade collector would otherwise walk the tree level by level.
    RubricNode.objects.filter(paper=paper)._raw_delete(RubricNode.objects.db)
    return _insert_flat(paper, nodes, None, 0)


# ---------------------------------------------------------------------------------------------
# Versions


def latest_version(paper: Paper) -> RubricVersion | None:
    return paper.rubric_versions.order_by("-number").first()


@transaction.atomic
def create_version(paper: Paper, user=None, message: str = "", tree: dict[str, Any] | None = None) -> RubricVersion:
    """Save ``tree`` (default: the draft) as the paper's next numbered, immutable version.

    A tree with errors is refused: versions are what judges grade against, so each one must be
    a valid PaperBench rubric. The draft may hold errors while a curator works.
    """
    Paper.objects.select_for_update().filter(pk=paper.pk).first()
    if tree is None:
        tree = export_draft(paper)
    nodes = flatten(tree)
    bad = errors(validate_tree(nodes))
    if bad:
        raise RubricRefused(f"This tree has {len(bad)} error{'s' if len(bad) != 1 else ''}; fix them first", bad)
    number = (paper.rubric_versions.aggregate(m=Max("number"))["m"] or 0) + 1
    text = dumps_compact(tree)
    return RubricVersion.objects.create(
        paper=paper, number=number, message=message[:500], tree_json=text,
        content_hash=hashlib.sha256(text.encode()).hexdigest(), node_count=len(nodes),
        leaf_count=sum(leaf_mask(nodes)), created_by=user if user is not None and user.is_authenticated else None,
    )


@transaction.atomic
def import_rubric_tree(paper: Paper, parsed: ParsedRubric, user=None, message: str = "Imported") -> RubricVersion | None:
    """Make an already validated tree the draft and save it as a version (unless unchanged)."""
    replace_draft(paper, parsed.nodes)
    last = latest_version(paper)
    if last is not None and last.content_hash == tree_hash(parsed.tree):
        return None
    return create_version(paper, user, message, parsed.tree)


@transaction.atomic
def restore_version(version: RubricVersion, user=None) -> RubricVersion:
    """Make an old version the draft again and record that as a new version."""
    tree = version.tree
    replace_draft(version.paper, flatten(tree))
    return create_version(version.paper, user, f"Restored version {version.number}", tree)


# ---------------------------------------------------------------------------------------------
# Diff


@dataclass(slots=True)
class TreeDiff:
    added: list[dict[str, Any]]
    removed: list[dict[str, Any]]
    moved: list[dict[str, Any]]
    changed: list[dict[str, Any]]

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.moved or self.changed)

    def as_dict(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "moved": self.moved, "changed": self.changed,
                "summary": {k: len(getattr(self, k)) for k in ("added", "removed", "moved", "changed")}}


_DIFF_FIELDS: tuple[str, ...] = ("requirements", "weight", "task_category", "finegrained_task_category")


def _match_nodes(old: list[FlatNode], new: list[FlatNode]) -> dict[int, int]:
    """old index -> new index. Ids that appear once on both sides match directly; repeated ids
    (real trees have them) match first where the parents already match, then in pre-order."""
    def by_id(nodes: list[FlatNode]) -> dict[Any, list[int]]:
        out: dict[Any, list[int]] = {}
        for n in nodes:
            key = n.node_id if isinstance(n.node_id, (str, int)) else repr(n.node_id)
            out.setdefault(key, []).append(n.index)
        return out

    old_ids, new_ids = by_id(old), by_id(new)
    match: dict[int, int] = {}
    repeated: list[Any] = []
    for key, olds in old_ids.items():
        news = new_ids.get(key)
        if not news:
            continue
        if len(olds) == 1 and len(news) == 1:
            match[olds[0]] = news[0]
        else:
            repeated.append(key)
    # Parents come first in pre-order, so matching repeated ids in pre-order sees parents matched.
    for key in repeated:
        olds, news = list(old_ids[key]), list(new_ids[key])
        for o in list(olds):
            parent = old[o].parent
            want = match.get(parent) if parent is not None else None
            hit = next((n for n in news if new[n].parent == want), None)
            if hit is not None:
                match[o] = hit
                olds.remove(o)
                news.remove(hit)
        for o, n in zip(olds, news, strict=False):
            match[o] = n
    return match


def diff_trees(old_tree: dict[str, Any], new_tree: dict[str, Any]) -> TreeDiff:
    """Nodes added, removed, moved (new parent or new place among siblings), and field changes."""
    old, new = flatten(old_tree), flatten(new_tree)
    match = _match_nodes(old, new)
    matched_new = set(match.values())
    added = [{"id": n.node_id, "path": node_path(new, n.index)} for n in new if n.index not in matched_new]
    removed = [{"id": n.node_id, "path": node_path(old, n.index)} for n in old if n.index not in match]
    old_rank = _kept_ranks(old, set(match))
    new_rank = _kept_ranks(new, matched_new)
    moved: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for o, n in sorted(match.items(), key=lambda kv: kv[1]):
        a, b = old[o], new[n]
        if a.parent is not None:
            same_parent = match.get(a.parent) == b.parent
            # Rank among siblings kept on both sides: an insertion before a node is not a move.
            if not same_parent or old_rank[o] != new_rank[n]:
                moved.append({"id": b.node_id, "from": node_path(old, o), "to": node_path(new, n),
                              "kind": "reordered" if same_parent else "moved"})
        for name in _DIFF_FIELDS:
            va, vb = getattr(a, name), getattr(b, name)
            if va != vb or type(va) is not type(vb):
                changed.append({"id": b.node_id, "path": node_path(new, n), "field": name, "old": va, "new": vb})
    return TreeDiff(added, removed, moved, changed)


def _kept_ranks(nodes: list[FlatNode], kept: set[int]) -> list[int]:
    # Pre-order visits siblings in position order, so one pass numbers them.
    counters: dict[int | None, int] = {}
    ranks = [0] * len(nodes)
    for n in nodes:
        if n.index in kept:
            ranks[n.index] = counters.get(n.parent, 0)
            counters[n.parent] = ranks[n.index] + 1
    return ranks


# ---------------------------------------------------------------------------------------------
# Node edits on the draft


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


def _lock(paper: Paper) -> None:
    Paper.objects.select_for_update().filter(pk=paper.pk).first()


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
    _lock(paper)
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
    return _rows_in_order(_insert_flat(paper, nodes, parent.pk, position))


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
    _lock(paper)
    node = _claim(paper, pk, expected_version)
    if node.parent_id is None:
        raise TreeEditError("the root cannot be deleted")
    draft = load_draft(paper)
    index = draft.index_of[pk]
    indexes = _subtree_indexes(draft, index)
    removed = DeletedSubtree(node.parent_id, node.position, subtree_json(draft, index),
                             [draft.pks[i] for i in indexes])
    # Deleting the rows in one statement avoids the ORM's per-level cascade queries.
    RubricNode.objects.filter(pk__in=removed.pks)._raw_delete(RubricNode.objects.db)
    RubricNode.objects.filter(parent_id=node.parent_id, position__gt=node.position).update(
        position=F("position") - 1
    )
    RubricNode.objects.filter(pk=node.parent_id).update(version=F("version") + 1)
    return removed


@transaction.atomic
def move_node(paper: Paper, pk: int, expected_version: int | None, new_parent_pk: int,
              position: int | None = None) -> RubricNode:
    """Move a node (with its subtree) under ``new_parent_pk`` at ``position``; cycles are refused."""
    _lock(paper)
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


# ---------------------------------------------------------------------------------------------
# What the editor and the pages read


def node_dict(node: RubricNode) -> dict[str, Any]:
    """One row as the editor and the API see it."""
    return {"pk": node.pk, "parent": node.parent_id, "position": node.position, "version": node.version,
            "id": node.node_id, "requirements": node.requirements, "weight": node.weight,
            "task_category": node.task_category, "finegrained_task_category": node.finegrained_task_category}


def draft_stamp(draft: DraftTree) -> str:
    """A fingerprint that changes with every write to the draft: each write bumps a version,
    adds rows (a higher pk) or removes rows. Lets an open editor notice others' changes."""
    return f"{len(draft.pks)}-{max(draft.pks)}-{sum(draft.versions)}"


def current_stamp(paper: Paper) -> str:
    """``draft_stamp`` from one aggregate query, without reading the tree."""
    agg = RubricNode.objects.filter(paper=paper).aggregate(n=Count("id"), top=Max("id"), total=Sum("version"))
    return f"{agg['n']}-{agg['top']}-{agg['total'] or 0}"


def draft_problems(draft: DraftTree) -> list[dict[str, Any]]:
    return [problem_dict(p, draft.pks) for p in validate_tree(draft.nodes)]


def editor_payload(draft: DraftTree) -> dict[str, Any]:
    """Flat pre-order node list with pks, versions and effective weights, for the editor page."""
    try:
        shares = ScoringPlan.from_nodes(draft.nodes).effective_weights()
    except ScoringError:
        shares = [None] * len(draft.nodes)
    pks = draft.pks
    out = []
    for i, n in enumerate(draft.nodes):
        out.append({"pk": pks[i], "parent": pks[n.parent] if n.parent is not None else None,
                    "version": draft.versions[i], "id": n.node_id, "requirements": n.requirements,
                    "weight": n.weight, "task_category": n.task_category,
                    "finegrained_task_category": n.finegrained_task_category, "share": shares[i]})
    return {"nodes": out, "problems": draft_problems(draft), "stamp": draft_stamp(draft)}


@dataclass(slots=True)
class RubricSummary:
    node_count: int
    leaf_count: int
    depth: int
    categories: dict[str, int]
    problems: list[dict[str, Any]]
    draft_hash: str
    version: RubricVersion | None

    @property
    def unsaved(self) -> bool:
        return self.version is None or self.version.content_hash != self.draft_hash


def summarise(paper: Paper) -> RubricSummary | None:
    """Counts, problems and whether the draft differs from the latest version."""
    try:
        draft = load_draft(paper)
    except NodeNotFound:
        return None
    is_leaf = leaf_mask(draft.nodes)
    depth = [0] * len(draft.nodes)
    categories: dict[str, int] = {}
    for n in draft.nodes:
        if n.parent is not None:
            depth[n.index] = depth[n.parent] + 1
        if is_leaf[n.index]:
            key = n.task_category or "(none)"
            categories[key] = categories.get(key, 0) + 1
    return RubricSummary(len(draft.nodes), sum(is_leaf), max(depth), dict(sorted(categories.items())),
                         draft_problems(draft), tree_hash(draft.export()), latest_version(paper))

