"""JudgeEval metrics: a judge's leaf grades against human grades (pure Python).

Computed exactly as PaperBench's judge evaluation does (paperbench/judge/judge_eval/evaluate.py,
``calculate_judge_scores``): walk the judge's graded tree depth-first; a node with
``valid_score`` false is skipped with its whole subtree; each leaf pairs the judge's score with
the score of the first node with the same id (depth-first) in the human tree. Then scikit-learn's
``accuracy_score`` and macro-averaged ``precision/recall/f1_score`` with ``zero_division=0``,
overall and per ``task_category`` of the judge tree's leaves: scikit-learn is called the same way here
(``precision_recall_fscore_support`` with ``average="macro"`` gives the three values the three
PaperBench calls give). With no samples at all the metrics are None (scikit-learn would return
nan). scikit-learn is imported on the first call: it takes over a second to import, and the web
process imports this module at start-up (the audit pages use ``compute_metrics``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from apps.judging.judge.grader import grade_tree, graded_tree
from apps.rubrics.paperbench import flatten
from apps.rubrics.scoring import score_graded

if TYPE_CHECKING:
    from apps.judging.judge.grader import JudgeSettings
    from apps.judging.judge.prompts import PaperContext
    from apps.judging.judge.submission import Submission
    from apps.judging.llm.client import Chat


@dataclass(slots=True)
class MetricSummary:
    accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    num_positives: int
    num_negatives: int
    num_samples: int


@dataclass(slots=True)
class LeafPairs:
    y_pred: list[float] = field(default_factory=list)
    y_true: list[float] = field(default_factory=list)


@dataclass(slots=True)
class JudgeEvalReport:
    overall: MetricSummary
    stratified: dict[str | None, MetricSummary]
    skipped_invalid: int  # judge-tree nodes skipped because valid_score was false

    def as_dict(self) -> dict[str, Any]:
        return {
            "overall": asdict(self.overall),
            "stratified": {str(k): asdict(v) for k, v in self.stratified.items()},
            "skipped_invalid": self.skipped_invalid,
        }


def compute_metrics(y_true: list[float], y_pred: list[float]) -> MetricSummary:
    # lazy: scikit-learn takes about a second to import; only JudgeEval needs it
    import numpy as np
    from sklearn import config_context
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    if len(y_true) != len(y_pred):
        raise ValueError("y_true and y_pred differ in length")
    n = len(y_true)
    positives = int(sum(y_true))
    if n == 0:
        return MetricSummary(None, None, None, None, 0, 0, 0)
    truth, pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    # The arguments are fixed (and right): checking them would cost scikit-learn more than the
    # metrics do, and an audit page computes them per category and per pair of graders.
    with config_context(skip_parameter_validation=True):
        precision, recall, f1, _ = precision_recall_fscore_support(truth, pred, average="macro", zero_division=0)
        accuracy = accuracy_score(truth, pred)
    return MetricSummary(float(accuracy), float(precision), float(recall), float(f1), positives, n - positives, n)


def _first_by_id(tree: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    found: dict[Any, dict[str, Any]] = {}
    stack = [tree]
    while stack:
        node = stack.pop()
        found.setdefault(node.get("id"), node)
        stack.extend(reversed(node.get("sub_tasks") or []))
    return found


def collect_pairs(judged: dict[str, Any], expected: dict[str, Any]) -> tuple[dict[str | None, LeafPairs], LeafPairs, int]:
    """Leaf (prediction, truth) pairs overall and per category; and how many invalid nodes were skipped."""
    by_id = _first_by_id(expected)
    overall = LeafPairs()
    per_category: dict[str | None, LeafPairs] = {}
    skipped = 0
    stack = [judged]
    while stack:
        node = stack.pop()
        if not node.get("valid_score"):
            skipped += 1
            continue
        kids = node.get("sub_tasks") or []
        if kids:
            stack.extend(reversed(kids))
            continue
        truth = by_id.get(node.get("id"))
        if truth is None:
            raise ValueError(f"leaf {node.get('id')!r} is not in the human-graded tree")
        pairs = per_category.setdefault(node.get("task_category"), LeafPairs())
        for target in (overall, pairs):
            target.y_pred.append(node.get("score"))
            target.y_true.append(truth.get("score"))
    return per_category, overall, skipped


def judge_eval(judged: dict[str, Any], expected: dict[str, Any]) -> JudgeEvalReport:
    per_category, overall, skipped = collect_pairs(judged, expected)
    return JudgeEvalReport(
        overall=compute_metrics(overall.y_true, overall.y_pred),
        stratified={cat: compute_metrics(p.y_true, p.y_pred) for cat, p in per_category.items()},
        skipped_invalid=skipped,
    )


def evaluate_judge(
    expected: dict[str, Any], client: Chat, paper: PaperContext, submission: Submission,
    settings: JudgeSettings | None = None, *, on_result: Callable[..., None] | None = None,
) -> dict[str, Any]:
    """Run a judge over a human-graded tree's rubric and compare its leaf grades with the human ones.

    The tree's own grades are ignored while judging (only its structure and texts are used).
    Returns a JSON-ready report: metrics overall and per category, plus cost and invalid counts.
    """

    nodes = flatten(expected)
    outcome = grade_tree(nodes, paper, submission, client, settings, on_result=on_result)
    # PaperBench marks inner nodes valid, so only invalid leaves drop out of the metrics.
    judged = graded_tree(outcome, inner_validity=False)
    report = judge_eval(judged, expected)
    totals = outcome.totals()
    return {
        "endpoint": client.config.name,
        "model": client.config.model,
        "leaves": totals["leaves"],
        "invalid_leaves": totals["invalid"],
        "judge_score": outcome.score,
        "human_score": score_graded(expected).root_score,
        "cost_usd": totals["cost_usd"],
        "prompt_tokens": totals["prompt_tokens"],
        "completion_tokens": totals["completion_tokens"],
        "duration_s": totals["duration_s"],
        **report.as_dict(),
        "judged_tree": judged,
    }
