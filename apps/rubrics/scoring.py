"""PaperBench scoring of a flattened rubric tree (pure Python, no Django).

A leaf scores 0 or 1. An inner node scores sum(child.score * child.weight) / sum(child.weight),
or 0.0 when its children's weights sum to 0 (PaperBench ``score_from_children``). The sums run
over children in file order, exactly as PaperBench does, so a re-score reproduces stored
floats bit for bit.

Category-restricted scoring follows PaperBench's ``reduce_to_category`` (used for its
"code-dev" variant): leaves of other categories are removed, then any inner node left with
no children is removed too, and the pruned tree is scored as usual. So a subtree without a
leaf of the category does not count in its parent's weighted mean (its weight leaves the
denominator), rather than counting as 0. Nodes removed this way score 0.0 here and
``ScoringPlan.category_mask`` tells them apart; when no leaf has the category, PaperBench has
no tree at all and the root scores 0.0.

Speed: ``ScoringPlan`` does the tree bookkeeping once (children, weight sums), so each
re-score is one reverse pass over the pre-order inner nodes with no recursion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from apps.core.domain import Invalid
from apps.rubrics.paperbench import FlatNode, flatten, leaf_mask
from apps.rubrics.validation import is_number


class ScoringError(Invalid, ValueError):
    """The tree cannot be scored (e.g. a weight that is not a number)."""


@dataclass(slots=True)
class _Groups:
    # Per node: children that count, and their weight sum; inner nodes in reverse pre-order.
    children: list[tuple[int, ...]]
    totals: list[float]
    inner_reversed: list[int]
    included: list[bool]


@dataclass(slots=True)
class ScoringPlan:
    """The shape and weights of one tree, prepared for fast repeated scoring."""

    parents: list[int]  # -1 for the root
    weights: list[float]
    categories: list[Any]
    is_leaf: list[bool]
    _groups: dict[str | None, _Groups] = field(default_factory=dict, repr=False)

    @classmethod
    def from_nodes(cls, nodes: Sequence[FlatNode]) -> ScoringPlan:
        """Needs ``flatten``'s pre-order contract: ``nodes[i].index == i``, parents first."""
        parents: list[int] = []
        weights: list[float] = []
        is_leaf = [True] * len(nodes)
        for i, node in enumerate(nodes):
            parent = node.parent
            if node.index != i or (parent is not None and not 0 <= parent < i):
                raise ScoringError("Nodes must be in pre-order with index == list position")
            if parent is None:
                if i:
                    raise ScoringError(f"Node {i} is a second root")
                parents.append(-1)
            else:
                parents.append(parent)
                is_leaf[parent] = False
            if not is_number(node.weight) or node.weight < 0:
                raise ScoringError(f"Node {i} has an invalid weight {node.weight!r}")
            weights.append(node.weight)
        return cls(parents, weights, [n.task_category for n in nodes], is_leaf)

    def category_mask(self, category: str | None = None) -> list[bool]:
        """Which nodes take part in scoring restricted to ``category`` (all when None)."""
        return list(self._groups_for(category).included)

    def score(self, leaf_scores: Mapping[int, float], category: str | None = None) -> list[float]:
        """Per-node scores; absent leaves score 0 and entries for inner nodes are ignored."""
        groups = self._groups_for(category)
        n = len(self.parents)
        scores = [0.0] * n
        is_leaf = self.is_leaf
        for i, s in leaf_scores.items():
            if not 0 <= i < n:
                raise ScoringError(f"Leaf score for node {i}, but the tree has {n} nodes")
            if is_leaf[i]:
                scores[i] = float(s)
        weights = self.weights
        children = groups.children
        totals = groups.totals
        # Children follow their parent in pre-order, so a reverse pass sees them scored first.
        for i in groups.inner_reversed:
            total = totals[i]
            if total == 0:
                scores[i] = 0.0
                continue
            acc = 0.0
            for c in children[i]:
                acc += scores[c] * weights[c]
            scores[i] = acc / total
        if category is not None:
            included = groups.included
            for i in range(n):
                if not included[i]:
                    scores[i] = 0.0
        return scores

    def effective_weights(self) -> list[float]:
        """Each node's share of the root score: product of normalised weights on its path."""
        groups = self._groups_for(None)
        weights = self.weights
        totals = groups.totals
        parents = self.parents
        share = [0.0] * len(parents)
        if not parents:
            return share
        share[0] = 1.0
        for i in range(1, len(parents)):
            p = parents[i]
            total = totals[p]
            share[i] = share[p] * weights[i] / total if total else 0.0
        return share

    def _groups_for(self, category: str | None) -> _Groups:
        cached = self._groups.get(category)
        if cached is not None:
            return cached
        n = len(self.parents)
        parents = self.parents
        is_leaf = self.is_leaf
        if category is None:
            included = [True] * n
        else:
            included = [is_leaf[i] and self.categories[i] == category for i in range(n)]
            # Reverse pre-order: a node is kept when any child is kept (reduce_to_category).
            for i in range(n - 1, 0, -1):
                if included[i]:
                    included[parents[i]] = True
        kids: list[list[int]] = [[] for _ in range(n)]
        totals = [0.0] * n
        weights = self.weights
        for i in range(1, n):
            if included[i]:
                p = parents[i]
                kids[p].append(i)
                totals[p] += weights[i]
        inner_reversed = [i for i in range(n - 1, -1, -1) if not is_leaf[i] and included[i]]
        groups = _Groups([tuple(k) for k in kids], totals, inner_reversed, included)
        self._groups[category] = groups
        return groups


def score_tree(
    nodes: Sequence[FlatNode], leaf_scores: Mapping[int, float], category: str | None = None
) -> list[float]:
    """Per-node PaperBench scores; ``scores[0]`` is the replication score."""
    return ScoringPlan.from_nodes(nodes).score(leaf_scores, category)


def effective_weights(nodes: Sequence[FlatNode]) -> list[float]:
    """Per-node share of the root score; over the leaves it sums to 1 unless a group sums to 0."""
    return ScoringPlan.from_nodes(nodes).effective_weights()


def shares(nodes: Sequence[FlatNode]) -> list[float | None]:
    """``effective_weights`` as the editor shows them (the page computes none itself): None for
    every node while a weight is not a number >= 0 and the tree cannot be scored."""
    try:
        return effective_weights(nodes)
    except ScoringError:
        return [None] * len(nodes)


@dataclass(slots=True, frozen=True)
class GradedScore:
    """A graded tree re-scored from its leaf scores, compared with the scores it stores."""

    scores: list[float]
    root_score: float
    stored_root_score: Any
    root_matches: bool  # within ``tolerance``
    root_exact: bool  # bit-identical
    mismatched_nodes: list[int]  # inner nodes whose stored score differs by more than tolerance


def graded_leaf_scores(nodes: Sequence[FlatNode]) -> dict[int, float]:
    """Leaf scores as stored in a graded tree (leaves without a score count as 0)."""
    is_leaf = leaf_mask(list(nodes))
    leaf_scores: dict[int, float] = {}
    for i, node in enumerate(nodes):
        if is_leaf[i] and node.score is not None:
            if not is_number(node.score):
                raise ScoringError(f"Leaf {i} has a score that is not a number: {node.score!r}")
            leaf_scores[i] = node.score
    return leaf_scores


def score_graded(tree: dict[str, Any], tolerance: float = 1e-9) -> GradedScore:
    """Re-score a graded (judge_eval) tree from its leaf ``score`` fields and compare.

    For a category-restricted score of a graded tree, use
    ``score_tree(nodes, graded_leaf_scores(nodes), category=...)``: stored inner scores are
    for the whole tree, so there is nothing to compare that with.
    """
    nodes = flatten(tree)
    plan = ScoringPlan.from_nodes(nodes)
    scores = plan.score(graded_leaf_scores(nodes))
    mismatched = [
        i
        for i, node in enumerate(nodes)
        if not plan.is_leaf[i]
        and (not is_number(node.score) or abs(node.score - scores[i]) > tolerance)
    ]
    stored = nodes[0].score
    return GradedScore(
        scores=scores,
        root_score=scores[0],
        stored_root_score=stored,
        root_matches=is_number(stored) and abs(stored - scores[0]) <= tolerance,
        root_exact=is_number(stored) and float(stored) == scores[0],
        mismatched_nodes=mismatched,
    )
