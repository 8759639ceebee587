from __future__ import annotations

import copy

import pytest

from apps.judging.judge.metrics import compute_metrics, judge_eval
from tests.judging.helpers import leaf, node


def test_macro_metrics_on_a_hand_computed_example():
    # class 0: tp 1, fp 1, fn 1 -> P = R = F1 = 1/2; class 1: tp 2, fp 1, fn 1 -> P = R = F1 = 2/3.
    m = compute_metrics(y_true=[1, 1, 1, 0, 0], y_pred=[1, 0, 1, 0, 1])
    assert m.accuracy == pytest.approx(3 / 5)
    assert m.precision == pytest.approx(7 / 12)
    assert m.recall == pytest.approx(7 / 12)
    assert m.f1 == pytest.approx(7 / 12)
    assert (m.num_positives, m.num_negatives, m.num_samples) == (3, 2, 5)


def test_a_class_never_true_counts_zero_in_the_macro_average_like_zero_division_0():
    # class 0 is only predicted: P0 = 0, R0 = 0 (undefined -> 0), F1_0 = 0; class 1: P 1, R 1/2, F1 2/3.
    m = compute_metrics(y_true=[1, 1], y_pred=[1, 0])
    assert (m.accuracy, m.precision, m.recall) == (0.5, 0.5, 0.25)
    assert m.f1 == pytest.approx(1 / 3)


def test_a_single_class_everywhere_scores_one():
    m = compute_metrics([1.0, 1.0], [1.0, 1.0])
    assert (m.accuracy, m.precision, m.recall, m.f1) == (1.0, 1.0, 1.0, 1.0)


def test_no_samples_gives_no_metrics():
    assert compute_metrics([], []).f1 is None


def graded(tree, scores: dict[str, float], invalid: set[str] = frozenset()):
    tree = copy.deepcopy(tree)
    stack = [tree]
    while stack:
        n = stack.pop()
        n["score"] = scores.get(n["requirements"], 0.0)
        n["valid_score"] = n["requirements"] not in invalid
        stack.extend(n["sub_tasks"])
    return tree


def test_judge_eval_pairs_leaves_by_id_skips_invalid_subtrees_and_stratifies_by_category():
    tree = node("root", node("A", leaf("a1"), leaf("a2", "Code Execution")), node("B", leaf("b1"), leaf("b2")))
    human = graded(tree, {"a1": 1, "a2": 0, "b1": 1, "b2": 1})
    judge = graded(tree, {"a1": 1, "a2": 1, "b1": 0, "b2": 1}, invalid={"B"})
    report = judge_eval(judge, human)
    # B's subtree is skipped whole: pairs a1 (1, 1) and a2 (pred 1, true 0).
    assert report.overall.num_samples == 2
    assert report.overall.accuracy == 0.5
    assert report.skipped_invalid == 1
    assert set(report.stratified) == {"Code Development", "Code Execution"}
    assert report.stratified["Code Development"].accuracy == 1.0
    assert report.stratified["Code Execution"].accuracy == 0.0
