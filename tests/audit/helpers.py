"""Judge runs with leaf grades, built in code for the audit tests."""

from __future__ import annotations

from typing import Any

from apps.rubrics.paperbench import flatten, leaf_mask
from apps.rubrics.scoring import score_tree


def leaf_indexes(version) -> list[int]:
    return [i for i, leaf in enumerate(leaf_mask(flatten(version.tree))) if leaf]


def make_run(version, judge_name: str, scores: dict[int, Any], *, kind: str = "model", trajectory=None,
             submission: str = "", cost: float = 0.0, graded_by=None, explanations: dict[int, str] | None = None):
    """A run of ``version`` with one LeafGrade per entry of ``scores`` (None = an invalid leaf)."""
    from apps.judging.models import JudgeRun, LeafGrade

    nodes = flatten(version.tree)
    root = score_tree(nodes, {i: s for i, s in scores.items() if s is not None})[0]
    run = JudgeRun.objects.create(
        paper=version.paper, rubric_version=version, rubric_hash=version.content_hash, kind=kind,
        judge_name=judge_name, score=root, trajectory=trajectory, submission=submission, cost_usd=cost,
        graded_by=graded_by,
    )
    LeafGrade.objects.bulk_create([
        LeafGrade(run=run, node_index=i, node_id=str(nodes[i].node_id), score=s, valid_score=s is not None,
                  invalid_reason="" if s is not None else "unparseable answer",
                  explanation=(explanations or {}).get(i, f"{judge_name} says {s}"),
                  category=nodes[i].task_category or "", calls=1 if kind == "model" else 0,
                  prompt=[{"role": "user", "content": f"Grade leaf {i}"}] if kind == "model" else [],
                  response=f"Score: {s}")
        for i, s in scores.items()
    ])
    return run
