"""The difference between two rubric trees: nodes added, removed, moved, and field changes."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from apps.rubrics.paperbench import FlatNode, flatten, node_path


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
                change = {"id": b.node_id, "path": node_path(new, n), "field": name, "old": va, "new": vb}
                if isinstance(va, str) and isinstance(vb, str):
                    change["words"] = word_diff(va, vb)
                changed.append(change)
    return TreeDiff(added, removed, moved, changed)


# Words and the whitespace between them, so joining the runs gives back the exact texts.
_TOKENS = re.compile(r"\s+|[^\s]+")


def word_diff(old: str, new: str) -> list[list[str]]:
    """A text change as runs of ``[op, text]`` (op: ``same``, ``del``, ``ins``), word by word.

    The ``same`` and ``del`` runs join to ``old``, the ``same`` and ``ins`` runs to ``new``.
    """
    a, b = _TOKENS.findall(old), _TOKENS.findall(new)
    runs: list[list[str]] = []

    def add(op: str, tokens: list[str]) -> None:
        if not tokens:
            return
        if runs and runs[-1][0] == op:
            runs[-1][1] += "".join(tokens)
        else:
            runs.append([op, "".join(tokens)])

    # autojunk off: long requirements repeat common words, which must still match.
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            add("same", a[i1:i2])
        else:
            add("del", a[i1:i2])
            add("ins", b[j1:j2])
    return runs


def _kept_ranks(nodes: list[FlatNode], kept: set[int]) -> list[int]:
    # Pre-order visits siblings in position order, so one pass numbers them.
    counters: dict[int | None, int] = {}
    ranks = [0] * len(nodes)
    for n in nodes:
        if n.index in kept:
            ranks[n.index] = counters.get(n.parent, 0)
            counters[n.parent] = ranks[n.index] + 1
    return ranks
