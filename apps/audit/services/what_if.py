"""The rubric what-if: every graded run of a paper re-scored under another tree, and how each
judge's ranking of the submissions changes."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from apps.audit.agreement import kendall_tau
from apps.audit.matching import match_leaves
from apps.audit.services.cells import leaf_scores, run_cells
from apps.audit.services.submissions import submission_label
from apps.audit.services.trees import tree_of
from apps.judging.models import JudgeRun
from apps.papers.models import Paper
from apps.rubrics.paperbench import RubricFormatError, flatten
from apps.rubrics.scoring import ScoringPlan
from apps.rubrics.services.store import export_draft, has_draft


def what_if_tree(paper: Paper, version: str | int | None) -> tuple[dict[str, Any], str]:
    """The tree to re-score with: a version number, or ``draft`` (the editor's unsaved tree)."""
    if version in (None, "", "draft"):
        if not has_draft(paper):
            raise ValidationError(f"{paper.slug} has no draft rubric.")
        return export_draft(paper), "draft"
    try:
        number = int(version)
    except (TypeError, ValueError):
        raise ValidationError("version must be a version number or 'draft'.") from None
    row = paper.rubric_versions.filter(number=number).first()
    if row is None:
        raise ValidationError(f"{paper.slug} has no rubric version {number}.")
    return row.tree, f"v{number}"


def what_if(paper: Paper, tree: dict[str, Any], label: str) -> dict[str, Any]:
    """Re-score every graded run of the paper under ``tree`` (same leaf grades, matched by id
    then text) and rank submissions per judge before and after."""
    try:
        nodes = flatten(tree)
        plan = ScoringPlan.from_nodes(nodes)
    except (RubricFormatError, ValueError) as exc:
        raise ValidationError(f"That tree cannot be scored: {exc}") from None
    runs = list(JudgeRun.objects.filter(paper=paper).select_related("paper", "rubric_version", "trajectory")
                .order_by("judge_name", "pk"))
    by_judge: dict[str, list[dict[str, Any]]] = {}
    leaf_count = sum(plan.is_leaf)
    for run in runs:
        source = tree_of(run.rubric_version)
        match = match_leaves(nodes, source.nodes)
        cells, _ = run_cells(run, run.rubric_version)
        old = source.plan.score(leaf_scores(cells))[0]
        new_leaves = {match.pairs[i]: c.score for i, c in cells.items() if c.score is not None and i in match.pairs}
        new = plan.score(new_leaves)[0]
        by_judge.setdefault(run.judge_name, []).append({
            "run": run.pk, "judge": run.judge_name, "submission": submission_label(run), "old": old, "new": new,
            "delta": new - old, "unmatched_leaves": len(match.unmatched_target),
            # Every leaf of the new tree this run gives no valid grade: ungraded, invalid, or new.
            "ungraded_leaves": leaf_count - len(new_leaves),
        })
    judges = []
    for judge, rows in by_judge.items():
        for key in ("old", "new"):
            order = sorted(range(len(rows)), key=lambda k, key=key: (-rows[k][key], rows[k]["run"]))
            for rank, k in enumerate(order, start=1):
                rows[k][f"{key}_rank"] = rank
        for row in rows:
            row["rank_change"] = row["old_rank"] - row["new_rank"]
        rows.sort(key=lambda r: r["new_rank"])
        judges.append({"judge": judge, "rows": rows, "changed": sum(1 for r in rows if r["rank_change"]),
                       "kendall": kendall_tau([r["old"] for r in rows], [r["new"] for r in rows])})
    return {"paper": paper.slug, "tree": label, "leaves": leaf_count, "judges": judges,
            "runs": len(runs), "rank_changes": sum(j["changed"] for j in judges)}
