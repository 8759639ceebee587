"""The per-process caches of parsed rubric versions and leaf matches (no database needed)."""

from __future__ import annotations

import json

from apps.audit.services.trees import tree_of, version_match
from apps.rubrics.models import RubricVersion
from apps.rubrics.services.parsing import tree_hash
from tests.rubrics.helpers import leaf, small_tree

# Far above any pk a test database hands out, so other tests' versions never share these keys.
PK = 10**12


def version(pk: int, tree: dict) -> RubricVersion:
    return RubricVersion(pk=pk, number=1, tree_json=json.dumps(tree), content_hash=tree_hash(tree))


def test_a_version_is_parsed_once_per_pk_and_content():
    first = tree_of(version(PK, small_tree()))
    assert tree_of(version(PK, small_tree())) is first
    assert [first.nodes[i].node_id for i in first.leaves] == ["a1", "a2", "b", "c1"]


def test_a_pk_that_comes_back_with_another_tree_is_parsed_again():
    old = tree_of(version(PK + 1, small_tree()))
    grown = small_tree()
    grown["sub_tasks"].append(leaf("d"))
    new = tree_of(version(PK + 1, grown))
    assert new is not old and [new.nodes[i].node_id for i in new.leaves] == ["a1", "a2", "b", "c1", "d"]


def test_leaves_of_another_version_are_matched_once_and_a_version_matches_itself_as_none():
    target = small_tree()
    target["sub_tasks"].insert(0, leaf("new"))
    v1, v2 = version(PK + 2, small_tree()), version(PK + 3, target)
    match = version_match(v2, v1)
    assert match is version_match(v2, v1)
    # Source leaf a1 (index 2 in v1) is index 3 in v2, after the inserted leaf.
    assert match.pairs[2] == 3 and len(match.pairs) == 4
    assert version_match(v1, version(PK + 2, small_tree())) is None
