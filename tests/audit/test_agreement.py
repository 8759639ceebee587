"""Agreement metrics: hand-computed values, and scipy / scikit-learn where they define the same thing."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, precision_score, recall_score

from apps.audit.agreement import (
    LeafAgreement,
    LeafPair,
    PairedSubmission,
    average_ranks,
    bootstrap_ci,
    cohen_kappa,
    compare_judges,
    kendall_tau,
    leaf_disagreement_below,
    leaf_report,
    order_flips,
    pearson,
    spearman,
    subtree_contributions,
    verdict,
)
from apps.rubrics.paperbench import flatten
from apps.rubrics.scoring import ScoringPlan
from tests.judging.helpers import small_tree

TRUTH = [1, 1, 0, 0, 1, 0]
PRED = [1, 0, 0, 0, 1, 1]


def test_kappa_by_hand():
    # p_o = 4/6, p_e = 0.5 * 0.5 + 0.5 * 0.5 = 0.5 -> (2/3 - 1/2) / (1/2) = 1/3
    assert cohen_kappa(TRUTH, PRED) == pytest.approx(1 / 3)


def test_kappa_undefined_when_both_raters_use_one_label():
    assert cohen_kappa([1, 1, 1], [1, 1, 1]) is None
    assert cohen_kappa([], []) is None


def test_leaf_agreement_by_hand():
    m = LeafAgreement.of(TRUTH, PRED)
    # Each class: tp 2, fp 1, fn 1 -> precision = recall = F1 = 2/3; accuracy 4/6.
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3)
    assert (m.num_samples, m.num_positives, m.disagreements) == (6, 3, 2)


def test_leaf_report_skips_ungraded_and_splits_categories():
    pairs = [LeafPair("Code Development", 1, 1), LeafPair("Code Development", 0, 1), LeafPair("Result Analysis", 1, 1),
             LeafPair("Result Analysis", None, 0), LeafPair("Code Execution", 1, None)]
    report = leaf_report(pairs)
    assert report.skipped == 2
    assert report.overall.num_samples == 3
    assert list(report.per_category) == ["Code Development", "Result Analysis"]
    assert report.per_category["Code Development"].accuracy == 0.5
    assert report.per_category["Result Analysis"].accuracy == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leaf_metrics_match_scikit_learn(seed):
    rng = random.Random(seed)
    truth = [rng.randint(0, 1) for _ in range(60)]
    pred = [t if rng.random() < 0.7 else 1 - t for t in truth]
    m = LeafAgreement.of(truth, pred)
    assert m.accuracy == pytest.approx(accuracy_score(truth, pred))
    assert m.precision == pytest.approx(precision_score(truth, pred, average="macro", zero_division=0))
    assert m.recall == pytest.approx(recall_score(truth, pred, average="macro", zero_division=0))
    assert m.f1 == pytest.approx(f1_score(truth, pred, average="macro", zero_division=0))
    assert m.kappa == pytest.approx(cohen_kappa_score(truth, pred))


def test_correlations_by_hand():
    x, y = [1, 2, 3], [1, 3, 2]
    assert pearson(x, y) == pytest.approx(0.5)  # sxy = 1, sxx = syy = 2
    assert spearman(x, y) == pytest.approx(0.5)
    assert kendall_tau(x, y) == pytest.approx(1 / 3)  # 2 concordant, 1 discordant of 3 pairs
    # tau-b with a tie in x: C = 2, D = 0, n0 = 3, ties_x = 1 -> 2 / sqrt(2 * 3)
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / 6 ** 0.5)
    assert average_ranks([10, 20, 10, 30]) == [1.5, 3.0, 1.5, 4.0]


def test_correlations_undefined_cases():
    assert pearson([1], [2]) is None
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    assert kendall_tau([2, 2], [1, 3]) is None
    with pytest.raises(ValueError):
        pearson([1, 2], [1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correlations_match_scipy(seed):
    rng = random.Random(seed)
    x = [rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]) for _ in range(50)]  # ties on purpose
    y = [min(1.0, v + rng.choice([0.0, 0.1, 0.3, -0.2])) for v in x]
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
    assert average_ranks(x) == pytest.approx(list(stats.rankdata(x)))


def test_bootstrap_interval_is_seeded_and_close_to_scipy():
    rng = random.Random(7)
    x = [rng.random() for _ in range(40)]
    y = [v + rng.gauss(0, 0.2) for v in x]
    ours = bootstrap_ci(pearson, x, y, n_resamples=1000, seed=3)
    assert ours == bootstrap_ci(pearson, x, y, n_resamples=1000, seed=3)
    theirs = stats.bootstrap((x, y), lambda a, b: stats.pearsonr(a, b).statistic, paired=True, vectorized=False,
                             n_resamples=1000, method="percentile", random_state=0).confidence_interval
    # Different random draws: the two percentile intervals agree to Monte Carlo error.
    assert ours[0] == pytest.approx(theirs.low, abs=0.05)
    assert ours[1] == pytest.approx(theirs.high, abs=0.05)
    assert ours[0] < pearson(x, y) < ours[1]


def test_bootstrap_needs_three_pairs():
    assert bootstrap_ci(pearson, [1, 2], [1, 2]) is None


def test_order_flips_by_hand():
    flips = order_flips(["a", "b", "c"], [0.9, 0.5, 0.1], [0.4, 0.6, 0.1])
    assert [(f.first, f.second) for f in flips] == [("a", "b")]
    assert flips[0].size == pytest.approx(0.4 + 0.2)
    # A tie on one side is not a flip.
    assert order_flips(["a", "b"], [0.5, 0.5], [0.1, 0.9]) == []


def test_subtree_contributions_add_up_to_the_root_difference():
    nodes = flatten(small_tree())
    plan = ScoringPlan.from_nodes(nodes)
    leaves = [i for i, leaf in enumerate(plan.is_leaf) if leaf]
    rng = random.Random(5)
    ref = plan.score({i: rng.randint(0, 1) for i in leaves})
    cand = plan.score({i: rng.randint(0, 1) for i in leaves})
    parts = subtree_contributions(plan.parents, plan.weights, ref, cand)
    assert set(parts) == {i for i in range(len(nodes)) if plan.parents[i] == 0}
    assert sum(parts.values()) == pytest.approx(ref[0] - cand[0])


def test_leaf_disagreement_counts_roll_up():
    nodes = flatten(small_tree())
    plan = ScoringPlan.from_nodes(nodes)
    leaves = [i for i, leaf in enumerate(plan.is_leaf) if leaf]  # 5 leaves
    ref = {i: 1 for i in leaves}
    cand = {leaves[0]: 0, leaves[1]: 1, leaves[2]: 0, leaves[3]: None, leaves[4]: 1}
    counts = leaf_disagreement_below(plan.parents, plan.is_leaf, ref, cand)
    assert counts[0] == (4, 2)  # one leaf has no candidate grade
    assert counts[plan.parents[leaves[0]]] == (2, 1)
    # Three sources: a leaf counts when two or more graded it, and disagrees when they are not all equal.
    third = {leaves[3]: 0, leaves[4]: 1}
    counts = leaf_disagreement_below(plan.parents, plan.is_leaf, ref, cand, third)
    assert counts[leaves[3]] == (1, 1) and counts[leaves[4]] == (1, 0)
    assert counts[0] == (5, 3)


@pytest.mark.parametrize(("value", "low", "expected"), [
    (0.9, 0.85, "pass"), (0.9, 0.7, "uncertain"), (0.7, 0.6, "fail"), (None, None, "undefined"), (0.9, None, "uncertain"),
])
def test_verdict(value, low, expected):
    assert verdict(value, low, 0.8) == expected


def test_compare_judges_report():
    rng = random.Random(11)
    subs = []
    for k in range(12):
        ref = k / 11
        subs.append(PairedSubmission(f"s{k}", f"sub {k}", ref, min(1.0, ref + rng.uniform(-0.15, 0.15)),
                                     [LeafPair("Code Development", 1, 1), LeafPair("Code Development", 0, k % 2)],
                                     {"A": 0.01 * k, "B": -0.001}, reference_cost=2.0, candidate_cost=0.5))
    report = compare_judges(subs, metric="spearman", threshold=0.5, n_resamples=300)
    assert report["n"] == 12 and report["pairs"] == 66
    assert report["verdict"] == "pass"
    assert report["value"] == pytest.approx(stats.spearmanr([s.reference_score for s in subs],
                                                            [s.candidate_score for s in subs]).statistic)
    assert report["cost_per_submission"] == {"reference": 2.0, "candidate": 0.5}
    assert report["subtree_drivers"][0]["subtree"] == "A"
    assert len(report["flips"]) > 0
    assert len(report["flips"]) == len(order_flips([s.key for s in subs], [s.reference_score for s in subs],
                                                   [s.candidate_score for s in subs]))
    assert compare_judges(subs, metric="spearman", threshold=0.999, n_resamples=300)["verdict"] == "fail"
    f1 = compare_judges(subs, metric="macro_f1", threshold=0.5, n_resamples=0)
    predictions = [v for k in range(12) for v in (1, k % 2)]
    assert f1["value"] == pytest.approx(f1_score([1, 0] * 12, predictions, average="macro"))
    assert f1["verdict"] == "pass"  # 0.73 >= 0.5, and a leaf metric has no interval to be uncertain about
    with pytest.raises(ValueError):
        compare_judges(subs, metric="nonsense")


def test_fast_kendall_matches_scipy_on_tie_heavy_samples():
    # Knight's O(n log n) counting is easy to get subtly wrong with ties: check many small cases.
    rng = random.Random(42)
    for _ in range(150):
        n = rng.randint(2, 30)
        x = [rng.choice([0, 0.25, 0.5, 1]) for _ in range(n)]
        y = [rng.choice([0, 0.5, 1]) for _ in range(n)]
        ours, theirs = kendall_tau(x, y), stats.kendalltau(x, y).statistic
        if ours is None:
            assert theirs != theirs  # nan
        else:
            assert ours == pytest.approx(theirs, abs=1e-12)


def test_bootstrap_interval_is_scipys_own_when_every_resample_is_defined():
    rng = random.Random(7)
    x = [rng.random() for _ in range(30)]
    y = [v + rng.gauss(0, 0.2) for v in x]
    ours = bootstrap_ci(spearman, x, y, n_resamples=400, confidence=0.9, seed=5)
    theirs = stats.bootstrap((x, y), lambda a, b: stats.spearmanr(a, b).statistic, paired=True, vectorized=False,
                             n_resamples=400, confidence_level=0.9, method="percentile",
                             rng=np.random.default_rng(5)).confidence_interval
    assert ours == pytest.approx((theirs.low, theirs.high), abs=1e-12)


def test_bootstrap_drops_undefined_resamples_instead_of_losing_the_interval():
    # Four pairs, one of them alone in its x value: about a third of the resamples draw x constant.
    x, y = [0.0, 0.0, 0.0, 1.0], [0.1, 0.3, 0.2, 0.9]
    interval = bootstrap_ci(pearson, x, y, n_resamples=500, seed=1)
    assert interval is not None and -1 <= interval[0] <= interval[1] <= 1
    # x and y each stand out at one point only, at different points: about 59% of the resamples
    # miss one of the two and are constant on that side, so fewer than half are left: no interval.
    assert bootstrap_ci(pearson, [0.0] * 8 + [1.0], [1.0] + [0.5] * 8, n_resamples=500) is None


def test_a_negative_seed_is_a_seed_too():
    x, y = [0.1, 0.4, 0.35, 0.8, 0.9], [0.2, 0.3, 0.5, 0.7, 0.95]
    assert bootstrap_ci(kendall_tau, x, y, n_resamples=200, seed=-4) == bootstrap_ci(kendall_tau, x, y,
                                                                                     n_resamples=200, seed=-4)
