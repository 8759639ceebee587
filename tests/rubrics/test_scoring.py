from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from apps.rubrics.paperbench import flatten, leaf_mask, load_json_bytes
from apps.rubrics.scoring import (
    ScoringError,
    ScoringPlan,
    effective_weights,
    graded_leaf_scores,
    score_graded,
    score_tree,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "paperbench"
RUBRICS = sorted((DATA / "rubrics").glob("*.rubric.json"))
JUDGE_EVAL = sorted((DATA / "judge_eval").glob("*.judge_eval.json"))


def load(path: Path) -> dict[str, Any]:
    return load_json_bytes(path.read_bytes())


def leaf(node_id: str, weight: float = 1, category: str = "Code Development") -> dict[str, Any]:
    return {
        "id": node_id,
        "requirements": node_id,
        "weight": weight,
        "sub_tasks": [],
        "task_category": category,
    }


def inner(node_id: str, children: list[dict[str, Any]], weight: float = 1) -> dict[str, Any]:
    return {
        "id": node_id,
        "requirements": node_id,
        "weight": weight,
        "sub_tasks": children,
        "task_category": None,
    }


# Pre-order: 0 root, 1 A, 2 a1, 3 a2, 4 B
EXAMPLE = inner("root", [inner("A", [leaf("a1", 1), leaf("a2", 3)], weight=1), leaf("B", 2)])


def test_inner_node_scores_weighted_mean_of_children() -> None:
    scores = score_tree(flatten(EXAMPLE), {2: 1, 3: 0, 4: 1})

    # A = (1*1 + 0*3) / 4 = 0.25; root = (0.25*1 + 1*2) / 3 = 0.75
    assert scores == [0.75, 0.25, 1.0, 0.0, 1.0]


def test_leaves_missing_from_leaf_scores_score_zero() -> None:
    scores = score_tree(flatten(EXAMPLE), {3: 1})

    # A = 3/4; root = (0.75*1 + 0*2) / 3 = 0.25
    assert scores == [0.25, 0.75, 0.0, 1.0, 0.0]


def test_scores_given_for_inner_nodes_are_ignored() -> None:
    scores = score_tree(flatten(EXAMPLE), {0: 1, 1: 1})

    assert scores == [0.0] * 5


def test_children_with_zero_weight_sum_give_their_parent_zero() -> None:
    tree = inner("root", [inner("A", [leaf("a1", 0), leaf("a2", 0)]), leaf("B", 1)])

    scores = score_tree(flatten(tree), {2: 1, 3: 1, 4: 1})

    # A = 0 (weights sum to 0); root = (0*1 + 1*1) / 2
    assert scores[1] == 0.0
    assert scores[0] == 0.5


def test_single_leaf_tree_scores_its_leaf() -> None:
    assert score_tree(flatten(leaf("only")), {0: 1}) == [1.0]


def test_category_scoring_leaves_out_subtrees_without_that_category() -> None:
    # A holds one Code Development leaf; B holds only Code Execution, so B leaves the mean.
    tree = inner(
        "root",
        [
            inner("A", [leaf("a1"), leaf("a2", category="Code Execution")], weight=1),
            inner("B", [leaf("b1", category="Code Execution")], weight=3),
        ],
    )

    scores = score_tree(flatten(tree), {2: 1, 3: 0, 5: 0}, category="Code Development")

    # Counting B as 0 would give (1*1 + 0*3) / 4 = 0.25.
    assert scores[0] == 1.0
    assert scores[1] == 1.0


def test_category_scoring_gives_excluded_nodes_zero() -> None:
    scores = score_tree(flatten(EXAMPLE), {2: 1, 3: 1, 4: 1}, category="Result Analysis")

    assert scores == [0.0] * 5


def test_category_mask_marks_nodes_that_count() -> None:
    tree = inner("root", [inner("A", [leaf("a1", category="Result Analysis")]), leaf("B")])

    mask = ScoringPlan.from_nodes(flatten(tree)).category_mask("Result Analysis")

    assert mask == [True, True, True, False]


def test_effective_weights_are_products_of_normalised_weights() -> None:
    weights = effective_weights(flatten(EXAMPLE))

    assert weights == pytest.approx([1.0, 1 / 3, 1 / 12, 3 / 12, 2 / 3])


def test_effective_weights_are_zero_under_a_zero_sum_parent() -> None:
    tree = inner("root", [inner("A", [leaf("a1", 0), leaf("a2", 0)]), leaf("B", 1)])

    assert effective_weights(flatten(tree)) == [1.0, 0.5, 0.0, 0.0, 0.5]


@pytest.mark.parametrize("path", RUBRICS, ids=lambda p: p.name)
def test_effective_weights_of_leaves_sum_to_one(path: Path) -> None:
    nodes = flatten(load(path))

    weights = effective_weights(nodes)

    assert sum(
        w for w, is_leaf in zip(weights, leaf_mask(nodes), strict=True) if is_leaf
    ) == pytest.approx(1.0)


def test_root_score_is_effective_weight_sum_of_passed_leaves() -> None:
    nodes = flatten(load(DATA / "rubrics" / "bam.rubric.json"))
    leaves = [i for i, is_leaf in enumerate(leaf_mask(nodes)) if is_leaf]
    rng = random.Random(7)
    passed = {i: rng.randint(0, 1) for i in leaves}

    weights = effective_weights(nodes)

    expected = sum(weights[i] for i, s in passed.items() if s)
    assert score_tree(nodes, passed)[0] == pytest.approx(expected)


def test_plan_can_be_reused_for_many_scorings() -> None:
    plan = ScoringPlan.from_nodes(flatten(EXAMPLE))

    assert plan.score({2: 1, 3: 0, 4: 1})[0] == 0.75
    assert plan.score({2: 0, 3: 1, 4: 0})[0] == 0.25


@pytest.mark.parametrize("path", JUDGE_EVAL, ids=lambda p: p.name)
def test_judge_eval_root_score_equals_stored_root_score(path: Path) -> None:
    result = score_graded(load(path))

    assert result.root_exact
    assert result.root_score == result.stored_root_score


@pytest.mark.parametrize("path", JUDGE_EVAL, ids=lambda p: p.name)
def test_judge_eval_inner_scores_equal_stored_scores(path: Path) -> None:
    assert score_graded(load(path)).mismatched_nodes == []


def test_score_graded_reports_a_wrong_stored_score() -> None:
    tree = json.loads(json.dumps(EXAMPLE))
    for node, score in [(tree, 0.5), (tree["sub_tasks"][0], 0.25)]:
        node["score"] = score
    tree["sub_tasks"][0]["sub_tasks"][0]["score"] = 1.0
    tree["sub_tasks"][0]["sub_tasks"][1]["score"] = 0.0
    tree["sub_tasks"][1]["score"] = 1.0

    result = score_graded(tree)

    assert result.root_score == 0.75
    assert not result.root_matches
    assert result.mismatched_nodes == [0]


def test_invalid_weight_cannot_be_scored() -> None:
    with pytest.raises(ScoringError, match="Node 2 has an invalid weight '1'"):
        score_tree(flatten(inner("root", [leaf("a"), leaf("b", weight="1")])), {})


def test_leaf_score_for_a_node_outside_the_tree_is_rejected() -> None:
    with pytest.raises(ScoringError, match="node -1"):
        score_tree(flatten(EXAMPLE), {-1: 1})


def test_graded_leaf_scores_reads_leaf_score_fields() -> None:
    tree = json.loads(json.dumps(EXAMPLE))
    tree["score"] = 0.75
    tree["sub_tasks"][0]["sub_tasks"][0]["score"] = 1.0
    tree["sub_tasks"][1]["score"] = 0.0

    assert graded_leaf_scores(flatten(tree)) == {2: 1.0, 4: 0.0}
