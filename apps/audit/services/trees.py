"""Rubric versions as parsed trees, and the leaf match between two versions, cached per process.

Versions are immutable, so both are kept in small LRU caches keyed by (pk, content hash): a pk
can come back after a rollback or a restored database, with another tree under it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from cachetools import LRUCache, cached

from apps.audit.matching import LeafMatch, match_leaves
from apps.rubrics.models import RubricVersion
from apps.rubrics.paperbench import FlatNode, flatten
from apps.rubrics.scoring import ScoringPlan

CACHE_SIZE = 32


@dataclass(slots=True)
class Tree:
    nodes: list[FlatNode]
    plan: ScoringPlan

    @property
    def leaves(self) -> list[int]:
        return [i for i, leaf in enumerate(self.plan.is_leaf) if leaf]


def _version_key(version: RubricVersion) -> tuple[int, str]:
    return (version.pk, version.content_hash)


@cached(LRUCache(maxsize=CACHE_SIZE), key=_version_key, lock=threading.Lock())
def tree_of(version: RubricVersion) -> Tree:
    """The version's flattened tree and scoring plan."""
    nodes = flatten(version.tree)
    return Tree(nodes, ScoringPlan.from_nodes(nodes))


def version_match(target: RubricVersion, source: RubricVersion) -> LeafMatch | None:
    """Source-version leaf index -> target-version leaf index; None when it is the same version."""
    if target.pk == source.pk:
        return None
    return _leaf_match(target, source)


@cached(LRUCache(maxsize=CACHE_SIZE), key=lambda target, source: (_version_key(target), _version_key(source)),
        lock=threading.Lock())
def _leaf_match(target: RubricVersion, source: RubricVersion) -> LeafMatch:
    return match_leaves(tree_of(target).nodes, tree_of(source).nodes)
