"""Side by side: one rubric tree, a column per judge run (and the user's own human column),
per-leaf disagreement and each column's agreement with the first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError

from apps.audit.agreement import LeafPair, leaf_disagreement_below, leaf_report
from apps.audit.services.cells import Cell, cell_score, leaf_scores, run_cells
from apps.audit.services.grading import own_human_run
from apps.audit.services.submissions import submission_key, submission_label
from apps.audit.services.trees import Tree, tree_of
from apps.judging.models import JudgeRun
from apps.rubrics.models import RubricVersion
from apps.rubrics.paperbench import node_number

MAX_SOURCES = 8


@dataclass(slots=True)
class Source:
    run: JudgeRun | None  # None: the current user's human column, not saved yet
    label: str
    kind: str
    cells: dict[int, Cell]
    scores: list[float]
    graded: int
    lost: int = 0
    mine: bool = False


@dataclass(slots=True)
class Comparison:
    base: JudgeRun
    version: RubricVersion
    tree: Tree
    sources: list[Source]
    rows: list[dict[str, Any]]
    run_ids: list[int] = field(default_factory=list)  # the runs asked for, in column order
    metrics: list[dict[str, Any]] = field(default_factory=list)
    disagreements: int = 0


def parse_run_ids(raw: str | Sequence[Any] | None) -> list[int]:
    """``"3,5,8"`` or a list -> ids, de-duplicated in order; ValidationError on junk."""
    if raw is None or raw == "":
        raise ValidationError("Pick at least one run to compare (runs=ID,ID,...).")
    if not isinstance(raw, (str, list, tuple)):
        raise ValidationError("runs must be a list of run ids or a text like '3,5,8'.")
    items = raw.split(",") if isinstance(raw, str) else raw
    ids: list[int] = []
    for item in items:
        try:
            value = int(str(item).strip())
        except ValueError:
            raise ValidationError(f"Not a run id: {str(item)[:40]!r}.") from None
        if not 1 <= value < 2**63:
            raise ValidationError(f"Not a run id: {value}.")
        if value not in ids:
            ids.append(value)
    if len(ids) > MAX_SOURCES:
        raise ValidationError(f"Compare at most {MAX_SOURCES} runs at once.")
    return ids


def _runs_in_order(ids: list[int]) -> list[JudgeRun]:
    runs = JudgeRun.objects.select_related("paper", "rubric_version", "trajectory", "graded_by").in_bulk(ids)
    missing = [i for i in ids if i not in runs]
    if missing:
        raise ValidationError(f"No judge run with id {missing[0]}.")
    ordered = [runs[i] for i in ids]
    if len({r.paper_id for r in ordered}) > 1:
        raise ValidationError("All compared runs must grade the same paper.")
    # Leaf by leaf only means something on one submission; across submissions, the report compares.
    if len({submission_key(r) for r in ordered}) > 1:
        graded = "; ".join(f"run {r.pk}: {submission_label(r)}" for r in ordered)
        raise ValidationError(f"These runs grade different submissions ({graded}). Pick runs of one submission; "
                              "the judge comparison report compares judges across submissions.")
    return ordered


def source_label(run: JudgeRun) -> str:
    if run.kind == JudgeRun.Kind.HUMAN:
        return f"human: {run.graded_by.get_username()}" if run.graded_by else run.judge_name
    return run.judge_name


def build_comparison(run_ids: Sequence[int], user=None, *, with_own: bool = False) -> Comparison:
    """The tree of the first run, one column per run and, with ``with_own``, the user's human column."""
    runs = _runs_in_order(list(run_ids))
    base = runs[0]
    version = base.rubric_version
    tree = tree_of(version)
    mine = own_human_run(base, user) if with_own and user is not None else None
    sources: list[Source] = []
    for run in runs:
        cells, lost = run_cells(run, version)
        sources.append(Source(run, source_label(run), run.kind, cells, tree.plan.score(leaf_scores(cells)),
                              len(cells), lost, mine=mine is not None and run.pk == mine.pk))
    if with_own and not any(s.mine for s in sources):
        cells = run_cells(mine, version)[0] if mine is not None else {}
        sources.append(Source(mine, f"you ({user.get_username()})", JudgeRun.Kind.HUMAN, cells,
                              tree.plan.score(leaf_scores(cells)), len(cells), mine=True))
    comparison = Comparison(base, version, tree, sources, _rows(tree, sources), [r.pk for r in runs])
    comparison.disagreements = sum(1 for r in comparison.rows if r["disagree"])
    comparison.metrics = _pairwise_metrics(tree, sources)
    return comparison


def _rows(tree: Tree, sources: list[Source]) -> list[dict[str, Any]]:
    nodes, plan = tree.nodes, tree.plan
    depth = [0] * len(nodes)
    below = leaf_disagreement_below(plan.parents, plan.is_leaf,
                                    *({i: c.score for i, c in s.cells.items()} for s in sources))
    rows = []
    for i, node in enumerate(nodes):
        parent = plan.parents[i]
        depth[i] = depth[parent] + 1 if parent >= 0 else 0
        leaf = plan.is_leaf[i]
        cells = [s.cells.get(i) if leaf else None for s in sources]
        valid_scores = {c.score for c in cells if c is not None and c.score is not None}
        rows.append({
            "index": i, "number": node_number(nodes, i), "depth": depth[i], "parent": parent,
            "node_id": str(node.node_id), "requirements": str(node.requirements or ""), "weight": node.weight,
            "category": node.task_category or "", "leaf": leaf,
            "cells": cells, "node_scores": [s.scores[i] for s in sources],
            "disagree": leaf and len(valid_scores) > 1, "compared_below": below[i][0], "disagree_below": below[i][1],
            "invalid": leaf and any(c is not None and not c.valid for c in cells),
        })
    return rows


def _pairwise_metrics(tree: Tree, sources: list[Source]) -> list[dict[str, Any]]:
    """Each column against the first (the reference): JudgeEval metrics, kappa, per category."""
    if len(sources) < 2:
        return []
    reference = sources[0]
    out = []
    for other in sources[1:]:
        pairs = [LeafPair(tree.plan.categories[i], cell_score(reference.cells.get(i)), cell_score(other.cells.get(i)))
                 for i in tree.leaves]
        out.append({"reference": reference.label, "candidate": other.label, **leaf_report(pairs).as_dict()})
    return out
