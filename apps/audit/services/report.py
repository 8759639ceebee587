"""The judge comparison report: a candidate judge against a reference judge over the submissions
both graded, and every other judge's cost and agreement beside it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Count

from apps.audit.agreement import VERDICT_METRICS, LeafPair, PairedSubmission, compare_judges, subtree_contributions
from apps.audit.services.cells import cell_score, leaf_scores, run_cells
from apps.audit.services.submissions import submission_key, submission_label
from apps.audit.services.trees import tree_of
from apps.judging.models import JudgeRun
from apps.papers.models import Paper
from apps.rubrics.paperbench import node_number


def judge_names(papers: Sequence[Paper] | None = None) -> list[dict[str, Any]]:
    runs = JudgeRun.objects.all()
    if papers:
        runs = runs.filter(paper__in=papers)
    return list(runs.values("judge_name", "kind").annotate(runs=Count("id")).order_by("judge_name"))


def _latest_by_submission(judge: str, papers: Sequence[Paper] | None) -> dict[tuple[int, str], JudgeRun]:
    runs = JudgeRun.objects.filter(judge_name=judge).select_related("paper", "rubric_version", "trajectory")
    if papers:
        runs = runs.filter(paper__in=papers)
    latest: dict[tuple[int, str], JudgeRun] = {}
    for run in runs.order_by("created_at", "pk"):
        latest[(run.paper_id, submission_key(run))] = run
    return latest


def paired_submissions(reference: str, candidate: str, papers: Sequence[Paper] | None = None) -> list[PairedSubmission]:
    """Submissions graded by both judges (their latest run each), scored on the reference's tree."""
    refs = _latest_by_submission(reference, papers)
    cands = _latest_by_submission(candidate, papers)
    paired = []
    for key in sorted(set(refs) & set(cands), key=lambda k: (k[0], k[1])):
        ref_run, cand_run = refs[key], cands[key]
        tree = tree_of(ref_run.rubric_version)
        ref_cells, _ = run_cells(ref_run, ref_run.rubric_version)
        cand_cells, _ = run_cells(cand_run, ref_run.rubric_version)
        ref_scores = tree.plan.score(leaf_scores(ref_cells))
        cand_scores = tree.plan.score(leaf_scores(cand_cells))
        contributions = subtree_contributions(tree.plan.parents, tree.plan.weights, ref_scores, cand_scores)
        paired.append(PairedSubmission(
            key=f"{ref_run.pk}:{cand_run.pk}", label=submission_label(ref_run),
            reference_score=ref_scores[0], candidate_score=cand_scores[0],
            leaf_pairs=[LeafPair(tree.plan.categories[i], cell_score(ref_cells.get(i)), cell_score(cand_cells.get(i)))
                        for i in tree.leaves],
            subtrees={f"{ref_run.paper.slug} {node_number(tree.nodes, c)} {str(tree.nodes[c].requirements)[:50]}": v
                      for c, v in contributions.items()},
            reference_cost=ref_run.cost_usd, candidate_cost=cand_run.cost_usd,
        ))
    return paired


@dataclass(slots=True)
class ReportRequest:
    reference: str
    candidate: str
    papers: list[Paper] = field(default_factory=list)
    metric: str = "kendall"
    threshold: float = 0.8
    n_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0


def judge_report(req: ReportRequest) -> dict[str, Any]:
    if req.reference == req.candidate:
        raise ValidationError("Pick two different judges.")
    if req.metric not in VERDICT_METRICS:
        raise ValidationError(f"Unknown metric {req.metric!r}; choose one of {', '.join(VERDICT_METRICS)}.")
    known = {j["judge_name"] for j in judge_names()}
    for name in (req.reference, req.candidate):
        if name not in known:
            raise ValidationError(f"No judge runs by {name!r}.")
    paired = paired_submissions(req.reference, req.candidate, req.papers or None)
    report = compare_judges(paired, metric=req.metric, threshold=req.threshold, n_resamples=req.n_resamples,
                            confidence=req.confidence, seed=req.seed)
    report.update(reference=req.reference, candidate=req.candidate, papers=[p.slug for p in req.papers])
    report["landscape"] = judge_landscape(req.reference, req.papers or None)
    return report


def judge_landscape(reference: str, papers: Sequence[Paper] | None = None) -> list[dict[str, Any]]:
    """Every other judge against the reference: cost per submission and agreement (for the cost plot)."""
    out = []
    for judge in judge_names(papers):
        name = judge["judge_name"]
        if name == reference:
            continue
        paired = paired_submissions(reference, name, papers)
        if not paired:
            continue
        # No bootstrap here: the plot needs point values only.
        summary = compare_judges(paired, n_resamples=0)
        out.append({"judge": name, "kind": judge["kind"], "n": summary["n"],
                    "cost_per_submission": summary["cost_per_submission"]["candidate"],
                    "macro_f1": summary["leaves"]["overall"]["f1"],
                    "spearman": summary["correlations"]["spearman"]["value"],
                    "kendall": summary["correlations"]["kendall"]["value"]})
    return out
