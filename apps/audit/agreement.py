"""Agreement between score sources (judges, humans): no Django.

Leaf level (one submission or many): accuracy and macro precision / recall / F1 exactly as
PaperBench's JudgeEval computes them (``apps.judging.judge.metrics.compute_metrics``, reused, not
re-derived), plus Cohen's kappa, overall and per task category. A pair is skipped when either
side has no valid 0/1 grade (an invalid judge leaf, a leaf a human has not graded yet).

Across submissions: Pearson, Spearman (Pearson of average ranks) and Kendall's tau-b of the
root scores of two judges, each with a percentile bootstrap confidence interval (resampling
submissions with replacement, seeded, so a report can be reproduced); the pairs of submissions
whose order flips between the two judges; and which top-level subtrees drive the difference.

The subtree contribution is exact, not a heuristic: the root score is the weighted mean of its
children, so root_a - root_b = sum over children c of (w_c / W) * (score_a(c) - score_b(c)).
Each child's term is its contribution; they add up to the root difference.

The statistics themselves come from scipy (``pearsonr``, ``spearmanr``, ``kendalltau`` tau-b,
``bootstrap``) and scikit-learn (``cohen_kappa_score``; JudgeEval's metrics in
``apps.judging.judge.metrics``). The functions here are thin wrappers that keep this module's
conventions where a statistic is undefined (fewer than two points, a constant series, kappa
when both raters use one single label): ``None``, where scipy and scikit-learn return nan.
Both libraries are imported inside the functions: together they take about 1.4 s to import,
which every web and worker process would otherwise pay at start-up for a report it rarely makes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from apps.judging.judge.metrics import MetricSummary, compute_metrics

Number = float | int
Statistic = Callable[[Sequence[float], Sequence[float]], float | None]

# Which statistics a judge comparison report can put its verdict on (name -> higher is better).
VERDICT_METRICS: tuple[str, ...] = ("kendall", "spearman", "pearson", "macro_f1", "kappa")
# Below this many submissions graded by both judges there is no verdict and no interval: resampling
# 3 submissions gives intervals like [1.000, 1.000], and one swapped pair moves Kendall's tau of 5
# by 0.4. With 10, tau's standard error under no association is about 0.25.
MIN_VERDICT_SUBMISSIONS = 10
TOO_FEW = "too few"


# --- Leaf level ------------------------------------------------------------------------------


def cohen_kappa(y_a: Sequence[Number], y_b: Sequence[Number]) -> float | None:
    """Cohen's kappa of two raters over the same items (scikit-learn's ``cohen_kappa_score``).

    Undefined (None) with no items, or when both raters used one and the same single label
    (the expected agreement is then 1 and kappa is 0 / 0).
    """
    # lazy: scipy and scikit-learn take 1.4 s to import; only reports need them
    import numpy as np
    from sklearn import config_context
    from sklearn.metrics import cohen_kappa_score

    if len(y_a) != len(y_b):
        raise ValueError("the two raters differ in length")
    if not y_a or len(set(y_a) | set(y_b)) < 2:
        return None
    with config_context(skip_parameter_validation=True):  # as in compute_metrics: the arguments are fixed
        return float(cohen_kappa_score(np.asarray(y_a, dtype=float), np.asarray(y_b, dtype=float)))


@dataclass(slots=True)
class LeafAgreement:
    """JudgeEval metrics (truth = reference, prediction = candidate) and Cohen's kappa."""

    accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    kappa: float | None
    num_positives: int
    num_negatives: int
    num_samples: int
    disagreements: int

    @classmethod
    def of(cls, y_true: Sequence[Number], y_pred: Sequence[Number]) -> LeafAgreement:
        summary: MetricSummary = compute_metrics(list(y_true), list(y_pred))
        return cls(
            accuracy=summary.accuracy, precision=summary.precision, recall=summary.recall, f1=summary.f1,
            kappa=cohen_kappa(y_true, y_pred), num_positives=summary.num_positives,
            num_negatives=summary.num_negatives, num_samples=summary.num_samples,
            disagreements=sum(1 for t, p in zip(y_true, y_pred, strict=True) if t != p),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class LeafPair:
    """One leaf graded by both sides. ``None`` = no valid grade on that side."""

    category: str | None
    reference: Number | None
    candidate: Number | None


@dataclass(slots=True)
class LeafReport:
    overall: LeafAgreement
    per_category: dict[str, LeafAgreement]
    skipped: int  # pairs without a valid grade on both sides

    def as_dict(self) -> dict[str, Any]:
        return {"overall": self.overall.as_dict(),
                "per_category": {k: v.as_dict() for k, v in self.per_category.items()},
                "skipped": self.skipped}


def leaf_report(pairs: Iterable[LeafPair]) -> LeafReport:
    """Metrics over every pair graded on both sides, overall and per category (sorted by name)."""
    truth: list[Number] = []
    pred: list[Number] = []
    by_category: dict[str, tuple[list[Number], list[Number]]] = {}
    skipped = 0
    for pair in pairs:
        if pair.reference is None or pair.candidate is None:
            skipped += 1
            continue
        truth.append(pair.reference)
        pred.append(pair.candidate)
        t, p = by_category.setdefault(pair.category or "(none)", ([], []))
        t.append(pair.reference)
        p.append(pair.candidate)
    return LeafReport(
        overall=LeafAgreement.of(truth, pred),
        per_category={name: LeafAgreement.of(*by_category[name]) for name in sorted(by_category)},
        skipped=skipped,
    )


# --- Correlations of root scores --------------------------------------------------------------


def _undefined(x: Sequence[Number], y: Sequence[Number]) -> bool:
    """Fewer than two points, or a constant side: no correlation (scipy would warn and give nan)."""
    if len(x) != len(y):
        raise ValueError("x and y differ in length")
    return len(x) < 2 or min(x) == max(x) or min(y) == max(y)


def _value(statistic: float) -> float | None:
    return None if math.isnan(statistic) else float(statistic)


def pearson(x: Sequence[Number], y: Sequence[Number]) -> float | None:
    # lazy: scipy and scikit-learn take 1.4 s to import; only reports need them
    from scipy import stats

    return None if _undefined(x, y) else _value(stats.pearsonr(x, y).statistic)


def average_ranks(values: Sequence[Number]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span (scipy's rankdata 'average')."""
    # lazy: scipy and scikit-learn take 1.4 s to import; only reports need them
    from scipy import stats

    return stats.rankdata(values).tolist()


def spearman(x: Sequence[Number], y: Sequence[Number]) -> float | None:
    # lazy: scipy and scikit-learn take 1.4 s to import; only reports need them
    from scipy import stats

    return None if _undefined(x, y) else _value(stats.spearmanr(x, y).statistic)


def kendall_tau(x: Sequence[Number], y: Sequence[Number]) -> float | None:
    """Kendall's tau-b (ties accounted for on both sides; scipy's default variant, O(n log n))."""
    # lazy: scipy and scikit-learn take 1.4 s to import; only reports need them
    from scipy import stats

    return None if _undefined(x, y) else _value(stats.kendalltau(x, y).statistic)


CORRELATIONS: dict[str, Statistic] = {"pearson": pearson, "spearman": spearman, "kendall": kendall_tau}


def bootstrap_ci(
    statistic: Statistic, x: Sequence[Number], y: Sequence[Number], *, n_resamples: int = 1000,
    confidence: float = 0.95, seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic(x, y)``, resampling the (x, y) pairs
    (scipy's ``bootstrap``, paired, drawing from a numpy Generator seeded with ``seed``).

    Resamples where the statistic is undefined (e.g. all points drawn equal) are dropped; with
    fewer than half of them left, or fewer than 3 pairs, there is no interval (None). scipy's own
    interval would be nan as soon as one resample is undefined, so the percentiles are taken
    here over its bootstrap distribution; without undefined resamples they are scipy's interval.
    """
    # lazy: scipy and scikit-learn take 1.4 s to import; only reports need them
    import numpy as np
    from scipy import stats

    if len(x) != len(y):
        raise ValueError("x and y differ in length")
    if not 0 < confidence < 1:
        raise ValueError("confidence must lie strictly between 0 and 1")
    n = len(x)
    if n < 3 or n_resamples < 1:
        return None

    def resampled(xs: np.ndarray, ys: np.ndarray) -> float:
        # Plain lists, as every Statistic takes; nan marks an undefined resample.
        value = statistic(xs.tolist(), ys.tolist())
        return math.nan if value is None else value

    with warnings.catch_warnings():
        # scipy warns that its interval is nan when a resample is undefined: handled below.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            (np.asarray(x, dtype=float), np.asarray(y, dtype=float)), resampled, paired=True, vectorized=False,
            n_resamples=n_resamples, confidence_level=confidence, method="percentile",
            # Bounded memory: the resampled indexes of one batch hold at most ~2 million numbers.
            batch=max(1, 2_000_000 // n),
            # A Generator takes no negative seed: -s draws as s does (as random.Random(-s) does).
            rng=np.random.default_rng(abs(seed)),
        )
    values = result.bootstrap_distribution
    values = values[~np.isnan(values)]
    if len(values) < n_resamples / 2:
        return None
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


@dataclass(slots=True)
class Correlation:
    value: float | None
    ci_low: float | None
    ci_high: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def correlations(
    x: Sequence[Number], y: Sequence[Number], *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
) -> dict[str, Correlation]:
    out: dict[str, Correlation] = {}
    for name, statistic in CORRELATIONS.items():
        interval = bootstrap_ci(statistic, x, y, n_resamples=n_resamples, confidence=confidence, seed=seed)
        out[name] = Correlation(statistic(x, y), *(interval or (None, None)))
    return out


# --- Order flips and subtrees ------------------------------------------------------------------


@dataclass(slots=True)
class OrderFlip:
    first: str
    second: str
    reference: tuple[float, float]
    candidate: tuple[float, float]

    @property
    def size(self) -> float:
        """How strongly the two judges disagree about this pair (sum of both gaps)."""
        return abs(self.reference[0] - self.reference[1]) + abs(self.candidate[0] - self.candidate[1])

    def as_dict(self) -> dict[str, Any]:
        return {"first": self.first, "second": self.second, "reference": list(self.reference),
                "candidate": list(self.candidate), "size": self.size}


def order_flips(keys: Sequence[str], reference: Sequence[float], candidate: Sequence[float]) -> list[OrderFlip]:
    """Pairs of submissions ranked one way by the reference and the other way by the candidate.

    A tie on either side is not a flip. Largest disagreements first.
    """
    if not len(keys) == len(reference) == len(candidate):
        raise ValueError("keys, reference and candidate differ in length")
    flips = []
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            if (reference[i] - reference[j]) * (candidate[i] - candidate[j]) < 0:
                flips.append(OrderFlip(keys[i], keys[j], (reference[i], reference[j]), (candidate[i], candidate[j])))
    flips.sort(key=lambda f: (-f.size, f.first, f.second))
    return flips


def leaf_disagreement_below(parents: Sequence[int], is_leaf: Sequence[bool],
                            *sources: Mapping[int, Number | None]) -> list[tuple[int, int]]:
    """Per node: (leaves below it graded validly by at least two sources, of which the sources'
    grades are not all equal). Pre-order input (parents[i] < i, -1 for the root), so one
    reverse pass adds each node into its parent. With two sources: compared and disagreeing."""
    compared = [0] * len(parents)
    differ = [0] * len(parents)
    for i, leaf in enumerate(is_leaf):
        if leaf:
            grades = [g for g in (source.get(i) for source in sources) if g is not None]
            if len(grades) >= 2:
                compared[i] = 1
                differ[i] = int(len(set(grades)) > 1)
    for i in range(len(parents) - 1, 0, -1):
        p = parents[i]
        compared[p] += compared[i]
        differ[p] += differ[i]
    return list(zip(compared, differ, strict=True))


def subtree_contributions(parents: Sequence[int], weights: Sequence[float], reference_scores: Sequence[float],
                          candidate_scores: Sequence[float]) -> dict[int, float]:
    """For each child c of the root: (w_c / W) * (reference(c) - candidate(c)); they sum to the
    root difference (see the module docstring). Node scores are full per-node score lists."""
    children = [i for i in range(1, len(parents)) if parents[i] == 0]
    total = sum(weights[c] for c in children)
    if total == 0:
        return {c: 0.0 for c in children}
    return {c: weights[c] / total * (reference_scores[c] - candidate_scores[c]) for c in children}


# --- Judge comparison report -------------------------------------------------------------------


@dataclass(slots=True)
class PairedSubmission:
    """One submission graded by both the reference and the candidate judge."""

    key: str
    label: str
    reference_score: float
    candidate_score: float
    leaf_pairs: list[LeafPair] = field(default_factory=list)
    # Top-level subtree label -> contribution to (reference root - candidate root).
    subtrees: dict[str, float] = field(default_factory=dict)
    reference_cost: float = 0.0
    candidate_cost: float = 0.0


def verdict(value: float | None, ci_low: float | None, threshold: float) -> str:
    """``pass`` when even the interval's low end meets the threshold, ``fail`` when the value
    itself misses it, ``uncertain`` in between (or when there is no interval)."""
    if value is None:
        return "undefined"
    if value < threshold:
        return "fail"
    if ci_low is not None and ci_low >= threshold:
        return "pass"
    return "uncertain"


def compare_judges(
    submissions: Sequence[PairedSubmission], *, metric: str = "kendall", threshold: float = 0.8,
    n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
) -> dict[str, Any]:
    """A candidate judge against a reference over a set of submissions, with a verdict.

    ``metric`` is one of VERDICT_METRICS: a correlation of root scores (its bootstrap interval
    decides ``pass`` vs ``uncertain``), or a leaf-level ``macro_f1`` / ``kappa`` over every leaf
    pair of every submission (no interval: ``pass`` or ``fail``). With fewer than
    MIN_VERDICT_SUBMISSIONS submissions no interval is drawn and a correlation's verdict is TOO_FEW.
    """
    if metric not in VERDICT_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(VERDICT_METRICS)}")
    keys = [s.key for s in submissions]
    ref = [s.reference_score for s in submissions]
    cand = [s.candidate_score for s in submissions]
    too_few = len(submissions) < MIN_VERDICT_SUBMISSIONS
    corr = correlations(ref, cand, n_resamples=0 if too_few else n_resamples, confidence=confidence, seed=seed)
    leaves = leaf_report(p for s in submissions for p in s.leaf_pairs)
    if metric in CORRELATIONS:
        value, ci_low = corr[metric].value, corr[metric].ci_low
    else:
        value = leaves.overall.f1 if metric == "macro_f1" else leaves.overall.kappa
        ci_low = value
    subtree_names = sorted({name for s in submissions for name in s.subtrees})
    n = len(submissions)
    drivers = sorted(
        ({"subtree": name,
          "mean_abs_contribution": sum(abs(s.subtrees.get(name, 0.0)) for s in submissions) / n,
          "mean_contribution": sum(s.subtrees.get(name, 0.0) for s in submissions) / n}
         for name in subtree_names),
        key=lambda d: -d["mean_abs_contribution"],
    ) if n else []
    return {
        "submissions": [
            {"key": s.key, "label": s.label, "reference": s.reference_score, "candidate": s.candidate_score,
             "difference": s.reference_score - s.candidate_score, "subtrees": s.subtrees,
             "reference_cost": s.reference_cost, "candidate_cost": s.candidate_cost}
            for s in submissions
        ],
        "n": n,
        "correlations": {k: v.as_dict() for k, v in corr.items()},
        "leaves": leaves.as_dict(),
        "flips": [f.as_dict() for f in order_flips(keys, ref, cand)],
        "pairs": n * (n - 1) // 2,
        "subtree_drivers": drivers,
        "cost_per_submission": {
            "reference": sum(s.reference_cost for s in submissions) / n if n else None,
            "candidate": sum(s.candidate_cost for s in submissions) / n if n else None,
        },
        "metric": metric, "threshold": threshold, "confidence": confidence, "n_resamples": n_resamples,
        "seed": seed, "value": value, "min_submissions": MIN_VERDICT_SUBMISSIONS,
        "verdict": TOO_FEW if too_few and metric in CORRELATIONS else verdict(value, ci_low, threshold),
    }
