"""Judge audit services: side-by-side comparisons, human grading, JudgeEval import, audit
queues, judge comparison reports and the rubric what-if.

The pages, the API and the exports all call these functions; the maths is in the pure modules
``apps.audit.agreement`` and ``apps.audit.matching`` and in ``apps.rubrics.scoring``.
"""

from __future__ import annotations

import csv
import io
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from apps.audit.agreement import (
    VERDICT_METRICS,
    LeafPair,
    PairedSubmission,
    compare_judges,
    kendall_tau,
    leaf_disagreement_below,
    leaf_report,
    subtree_contributions,
)
from apps.audit.matching import LeafMatch, match_leaves
from apps.audit.models import AuditItem, AuditQueue
from apps.core.roles import perm
from apps.judging.models import JudgeRun, LeafGrade
from apps.papers.models import Paper
from apps.rubrics.models import RubricVersion
from apps.rubrics.paperbench import FlatNode, RubricFormatError, flatten, load_json_bytes, node_number
from apps.rubrics.scoring import ScoringPlan
from apps.rubrics.services import (
    RubricRefused,
    export_draft,
    has_draft,
    import_rubric_tree,
    latest_version,
    parse_rubric_value,
)

MAX_SOURCES = 8
MAX_NOTE_CHARS = 10_000
GRADED_KEYS = ("score", "valid_score", "explanation", "judge_metadata")


# --- Trees, cached by version --------------------------------------------------------------------


@dataclass(slots=True)
class Tree:
    nodes: list[FlatNode]
    plan: ScoringPlan

    @property
    def leaves(self) -> list[int]:
        return [i for i, leaf in enumerate(self.plan.is_leaf) if leaf]


_TREES: OrderedDict[tuple[int, str], Tree] = OrderedDict()
_MATCHES: OrderedDict[tuple[tuple[int, str], tuple[int, str]], LeafMatch] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 32


def tree_of(version: RubricVersion) -> Tree:
    """Versions are immutable, so their parsed tree and scoring plan are kept per process (keyed
    by pk and content hash: a pk can come back after a rollback or a restored database)."""
    key = (version.pk, version.content_hash)
    with _CACHE_LOCK:
        cached = _TREES.get(key)
        if cached is not None:
            _TREES.move_to_end(key)
            return cached
    nodes = flatten(version.tree)
    tree = Tree(nodes, ScoringPlan.from_nodes(nodes))
    with _CACHE_LOCK:
        _TREES[key] = tree
        while len(_TREES) > _CACHE_SIZE:
            _TREES.popitem(last=False)
    return tree


def version_match(target: RubricVersion, source: RubricVersion) -> LeafMatch | None:
    """Source-version leaf index -> target-version leaf index; None when it is the same version."""
    if target.pk == source.pk:
        return None
    key = ((target.pk, target.content_hash), (source.pk, source.content_hash))
    with _CACHE_LOCK:
        if key in _MATCHES:
            return _MATCHES[key]
    match = match_leaves(tree_of(target).nodes, tree_of(source).nodes)
    with _CACHE_LOCK:
        _MATCHES[key] = match
        while len(_MATCHES) > _CACHE_SIZE:
            _MATCHES.popitem(last=False)
    return match


def submission_key(run: JudgeRun) -> str:
    """What a run graded: its trajectory, else its submission folder, else only itself."""
    if run.trajectory_id:
        return f"trajectory:{run.trajectory_id}"
    return f"submission:{_submission_of(run)}"


def _submission_of(run: JudgeRun) -> str:
    # A run with neither trajectory nor folder graded something only it knows: human runs made
    # beside it record "run:<pk>" as their submission, so they pair with it.
    return run.submission or f"run:{run.pk}"


def submission_label(run: JudgeRun) -> str:
    if run.trajectory_id and run.trajectory is not None:
        return f"{run.paper.slug} · {run.trajectory.title}"
    return f"{run.paper.slug} · {run.submission or f'run {run.pk}'}"


def _same_submission(run: JudgeRun) -> Q:
    if run.trajectory_id:
        return Q(trajectory_id=run.trajectory_id)
    return Q(trajectory__isnull=True, submission=_submission_of(run))


# --- Grades of a run on a target tree ----------------------------------------------------------


@dataclass(slots=True)
class Cell:
    score: float | None  # None: not graded, or graded invalid
    valid: bool = True
    graded: bool = False
    explanation: str = ""
    invalid_reason: str = ""
    graded_by: str = ""
    graded_at: Any = None
    has_prompt: bool = False
    source_index: int | None = None  # the leaf's index in the run's own version (for the prompt link)


def run_cells(run: JudgeRun, target: RubricVersion) -> tuple[dict[int, Cell], int]:
    """The run's leaf grades keyed by leaf index of ``target`` (mapped when versions differ),
    and how many of its grades found no leaf there."""
    match = version_match(target, run.rubric_version)
    cells: dict[int, Cell] = {}
    lost = 0
    rows = run.grades.values_list(
        "node_index", "score", "valid_score", "explanation", "invalid_reason", "graded_by__username", "graded_at",
        "calls",
    )
    for index, score, valid, explanation, reason, who, when, calls in rows:
        target_index = index if match is None else match.pairs.get(index)
        if target_index is None:
            lost += 1
            continue
        cells[target_index] = Cell(
            score=score if valid else None, valid=valid, graded=True, explanation=explanation or "",
            invalid_reason=reason or "", graded_by=who or "", graded_at=when, has_prompt=bool(calls),
            source_index=index,
        )
    return cells, lost


def leaf_scores(cells: dict[int, Cell]) -> dict[int, float]:
    """Scores for aggregation: an invalid or ungraded leaf counts 0, as in PaperBench."""
    return {i: c.score for i, c in cells.items() if c.score is not None}


# --- Side by side ---------------------------------------------------------------------------


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


def own_human_run(base: JudgeRun, user) -> JudgeRun | None:
    """The user's human grading of the base run's submission on the base run's rubric version."""
    return (JudgeRun.objects.filter(_same_submission(base), kind=JudgeRun.Kind.HUMAN, graded_by=user,
                                    paper_id=base.paper_id, rubric_version_id=base.rubric_version_id)
            .order_by("pk").first())


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
        pairs = [LeafPair(tree.plan.categories[i], _cell_score(reference.cells.get(i)), _cell_score(other.cells.get(i)))
                 for i in tree.leaves]
        out.append({"reference": reference.label, "candidate": other.label, **leaf_report(pairs).as_dict()})
    return out


def _cell_score(cell: Cell | None) -> float | None:
    return None if cell is None else cell.score


# --- Exports --------------------------------------------------------------------------------


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    return {
        "paper": comparison.base.paper.slug,
        "rubric_version": comparison.version.number,
        "sources": [
            {"run": s.run.pk if s.run else None, "label": s.label, "kind": s.kind, "root_score": s.scores[0],
             "graded_leaves": s.graded, "unmapped_grades": s.lost}
            for s in comparison.sources
        ],
        "disagreements": comparison.disagreements,
        "metrics": comparison.metrics,
        "nodes": [
            {"index": r["index"], "number": r["number"], "id": r["node_id"], "requirements": r["requirements"],
             "weight": r["weight"], "category": r["category"] or None, "leaf": r["leaf"], "disagree": r["disagree"],
             "leaves_compared_below": r["compared_below"], "leaves_disagreeing_below": r["disagree_below"],
             "scores": r["node_scores"] if not r["leaf"] else [c.score if c else None for c in r["cells"]],
             "explanations": [c.explanation if c else None for c in r["cells"]] if r["leaf"] else None}
            for r in comparison.rows
        ],
    }


def _csv_safe(value: Any) -> Any:
    # Spreadsheet formula injection: model output could start a cell with = + - @.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Every CSV export: header and body cells alike pass the formula guard (headers carry judge names)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in (header, *rows):
        writer.writerow([_csv_safe(v) for v in row])
    return buffer.getvalue()


def comparison_csv(comparison: Comparison) -> str:
    """One row per node: per source its score (leaf 0/1 or empty, inner nodes aggregated) and explanation."""
    header = ["index", "number", "node_id", "leaf", "category", "weight", "requirements", "disagree"]
    for s in comparison.sources:
        header += [f"{s.label} score", f"{s.label} explanation"]
    body = []
    for r in comparison.rows:
        row = [r["index"], r["number"], r["node_id"], int(r["leaf"]), r["category"], r["weight"], r["requirements"],
               int(r["disagree"])]
        for k in range(len(comparison.sources)):
            if r["leaf"]:
                cell = r["cells"][k]
                row += ["" if cell is None or cell.score is None else cell.score, cell.explanation if cell else ""]
            else:
                row += [round(r["node_scores"][k], 6), ""]
        body.append(row)
    return write_csv(header, body)


# --- Human grading -----------------------------------------------------------------------------


def _check_leaf(base: JudgeRun, node_index: Any) -> int:
    tree = tree_of(base.rubric_version)
    try:
        index = int(node_index)
    except (TypeError, ValueError):
        raise ValidationError("node_index must be a whole number.") from None
    if not 0 <= index < len(tree.nodes):
        raise ValidationError(f"The rubric has no node {index}.")
    if not tree.plan.is_leaf[index]:
        raise ValidationError(f"Node {index} is not a leaf: only leaves are graded.")
    return index


@transaction.atomic
def grade_leaf(*, base: JudgeRun, node_index: Any, score: Any, note: str = "", user) -> LeafGrade:
    """Save the user's own grade of one leaf of the base run's submission.

    The grade goes into the user's human run for that submission (created on first use): a
    judge's grade is never touched. Open audit items of that leaf for the user are completed.
    """
    index = _check_leaf(base, node_index)
    if score in (0, 1, "0", "1", 0.0, 1.0) and not isinstance(score, bool):
        value = float(score)
    else:
        raise ValidationError("A score must be 0 or 1.")
    note = str(note or "")
    if len(note) > MAX_NOTE_CHARS:
        raise ValidationError(f"A note may have at most {MAX_NOTE_CHARS} characters.")
    # One human run per user and submission: lock the base row so two tabs cannot create two.
    JudgeRun.objects.select_for_update().filter(pk=base.pk).first()
    run = own_human_run(base, user)
    if run is None:
        run = JudgeRun.objects.create(
            paper_id=base.paper_id, trajectory_id=base.trajectory_id, rubric_version=base.rubric_version,
            rubric_hash=base.rubric_version.content_hash, kind=JudgeRun.Kind.HUMAN,
            judge_name=f"human:{user.get_username()}"[:200], graded_by=user, split=base.split,
            submission=base.submission if base.trajectory_id else _submission_of(base),
        )
    tree = tree_of(base.rubric_version)
    node = tree.nodes[index]
    now = timezone.now()
    grade, _created = LeafGrade.objects.update_or_create(
        run=run, node_index=index,
        defaults={"node_id": str(node.node_id)[:100], "score": value, "valid_score": True, "invalid_reason": "",
                  "explanation": note, "category": str(node.task_category or "")[:40], "graded_by": user,
                  "graded_at": now},
    )
    _rescore(run, tree)
    AuditItem.objects.filter(queue__paper_id=base.paper_id, queue__submission_key=submission_key(base),
                             queue__base_run__rubric_version_id=base.rubric_version_id, node_index=index,
                             assignee=user, done_at__isnull=True).update(done_at=now)
    return grade


def _rescore(run: JudgeRun, tree: Tree) -> None:
    grades = dict(run.grades.values_list("node_index", "score"))
    scores = tree.plan.score({i: s for i, s in grades.items() if s is not None})
    JudgeRun.objects.filter(pk=run.pk).update(
        score=scores[0], n_leaves=len(grades), node_scores={"scores": scores, "invalid": [], "graded": []},
    )


# --- JudgeEval import --------------------------------------------------------------------------


@dataclass(slots=True)
class ImportResult:
    run: JudgeRun
    version: RubricVersion
    created_version: bool
    match: dict[str, Any]
    unmatched: list[dict[str, Any]]


def _strip_grades(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: ([_strip_grades(c) for c in v] if k == "sub_tasks" and isinstance(v, list) else v)
            for k, v in tree.items() if k not in GRADED_KEYS}


def _check_size(size: int) -> None:
    from django.conf import settings

    limit = int(settings.KLONG_MAX_UPLOAD_BYTES)
    if size > limit:
        raise ValidationError(f"The file is larger than {limit} bytes (KLONG_MAX_UPLOAD_BYTES).")


def read_upload(upload) -> bytes:
    """An uploaded file's bytes, refused before reading when it is over the upload limit."""
    _check_size(getattr(upload, "size", 0) or 0)
    return upload.read()


@transaction.atomic
def import_judge_eval(*, paper: Paper, data: bytes, filename: str, user) -> ImportResult:
    """A PaperBench human-graded tree (judge_eval JSON) as a human grading of ``paper``.

    Leaves land on the paper's latest rubric version, matched by id and then by requirement
    text; a paper without a rubric gets the file's tree (grades stripped) as version 1.
    """

    _check_size(len(data))
    try:
        graded = load_json_bytes(data)
        source = flatten(graded)
    except RubricFormatError as exc:
        raise ValidationError(f"Not a PaperBench graded tree: {exc.message}") from None
    source_tree = Tree(source, ScoringPlan.from_nodes(source)) if source else None
    if source_tree is None or not source_tree.leaves:
        raise ValidationError("The file has no leaves.")
    bad = [source[i] for i in source_tree.leaves if source[i].score not in (0, 1) or isinstance(source[i].score, bool)]
    if bad:
        raise ValidationError(f"{len(bad)} leaves have no human score of 0 or 1 (e.g. node {bad[0].node_id}).")
    version = latest_version(paper)
    created = False
    if version is None:
        try:
            version = import_rubric_tree(paper, parse_rubric_value(_strip_grades(graded)), user,
                                         f"Rubric from JudgeEval file {filename}"[:500])
        except RubricRefused as exc:
            raise ValidationError(f"The file's tree is not a valid rubric: {exc}") from None
        created = True
    target = tree_of(version)
    match = match_leaves(target.nodes, source)
    if not match.pairs:
        raise ValidationError(f"No leaf of the file matches a leaf of {paper.slug} v{version.number} by id or text.")
    stem = PurePath(filename).name.removesuffix(".json")
    run = JudgeRun.objects.create(
        paper=paper, rubric_version=version, rubric_hash=version.content_hash, kind=JudgeRun.Kind.HUMAN,
        judge_name=f"JudgeEval human: {stem}"[:200], split=paper.split, submission=f"judge_eval:{stem}"[:1000],
        settings={"imported_from": filename[:300], "imported_by": user.get_username() if user else "",
                  "match": match.summary()},
    )
    now = timezone.now()
    LeafGrade.objects.bulk_create([
        LeafGrade(run=run, node_index=t, node_id=str(target.nodes[t].node_id)[:100],
                  score=float(source[s].score), valid_score=source[s].valid_score is not False,
                  explanation=str(source[s].explanation or ""), category=str(target.nodes[t].task_category or "")[:40],
                  graded_at=now)
        for s, t in sorted(match.pairs.items(), key=lambda kv: kv[1])
    ], batch_size=500)
    _rescore(run, target)
    run.refresh_from_db()
    unmatched = [{"index": i, "id": str(source[i].node_id), "requirements": str(source[i].requirements)[:300]}
                 for i in match.unmatched_source]
    return ImportResult(run, version, created, match.summary(), unmatched)


# --- Audit queues --------------------------------------------------------------------------------


@transaction.atomic
def create_queue(*, run_ids: Sequence[int], assignees: Sequence[Any], user, name: str = "",
                 category: str = "") -> AuditQueue:
    """Every leaf where the compared runs disagree, shared round-robin among ``assignees``."""
    if not assignees:
        raise ValidationError("Assign the queue to at least one user.")
    _refuse_non_graders(assignees)
    comparison = build_comparison(run_ids)
    if len(comparison.sources) < 2:
        raise ValidationError("A queue compares at least two runs.")
    rows = [r for r in comparison.rows if r["disagree"] and (not category or r["category"] == category)]
    if not rows:
        raise ValidationError("These runs agree on every leaf" + (f" of category {category}" if category else "") + ".")
    base = comparison.base
    queue = AuditQueue.objects.create(
        name=(name or f"{base.paper.slug}: {' vs '.join(s.label for s in comparison.sources)}")[:200],
        paper_id=base.paper_id, base_run=base, runs=comparison.run_ids, submission_key=submission_key(base),
        created_by=user,
    )
    AuditItem.objects.bulk_create([
        AuditItem(queue=queue, node_index=r["index"], node_id=r["node_id"][:100], category=r["category"][:40],
                  assignee=assignees[k % len(assignees)])
        for k, r in enumerate(rows)
    ])
    _mark_already_graded(queue, assignees)
    return queue


def _refuse_non_graders(users: Iterable[Any]) -> None:
    cannot = [u.get_username() for u in users if not u.has_perm(perm("grade"))]
    if cannot:
        raise ValidationError(f"These users may not grade: {', '.join(cannot)}.")


def _mark_already_graded(queue: AuditQueue, assignees: Iterable[Any]) -> None:
    """Leaves an assignee already graded in their own human run count as done at once."""
    for assignee in assignees:
        mine = own_human_run(queue.base_run, assignee)
        if mine is not None:
            graded = list(mine.grades.values_list("node_index", flat=True))
            queue.items.filter(assignee=assignee, node_index__in=graded, done_at__isnull=True).update(
                done_at=timezone.now())


def may_reassign(queue: AuditQueue, user, from_user) -> bool:
    """The queue's creator and admins hand anyone's leaves on; a grader hands on their own."""

    return user.has_perm(perm("manage_users")) or user.pk in (queue.created_by_id, from_user.pk)


@transaction.atomic
def reassign_items(queue: AuditQueue, *, from_user, to_users: Sequence[Any], user) -> int:
    """Hand ``from_user``'s open leaves of the queue to ``to_users``, round-robin; returns how many.

    Done leaves stay with whoever graded them, so progress per user keeps its history. A new
    assignee who has already graded a leaf gets it as done.
    """
    if not may_reassign(queue, user, from_user):
        raise PermissionDenied("Only the queue's creator, an admin or the grader themself may hand their leaves on.")
    to_users = list(dict.fromkeys(to_users))  # keep the order given, drop repeats
    if not to_users:
        raise ValidationError("Pick at least one grader to take the leaves.")
    if from_user in to_users:
        raise ValidationError(f"{from_user.get_username()} is both giving and taking the leaves: pick someone else.")
    _refuse_non_graders(to_users)
    items = list(queue.items.select_for_update().filter(assignee=from_user, done_at__isnull=True)
                 .order_by("node_index"))
    if not items:
        raise ValidationError(f"{from_user.get_username()} has no open leaves in this queue.")
    for k, item in enumerate(items):
        item.assignee = to_users[k % len(to_users)]
    AuditItem.objects.bulk_update(items, ["assignee"])
    _mark_already_graded(queue, to_users)
    return len(items)


def queue_progress(queues: Iterable[AuditQueue] | None = None) -> list[dict[str, Any]]:
    """Per user: items assigned, done, open (over the given queues, or all)."""
    items = AuditItem.objects.all()
    if queues is not None:
        items = items.filter(queue__in=list(queues))
    rows = (items.values("assignee__username")
            .annotate(total=Count("id"), done=Count("id", filter=Q(done_at__isnull=False)))
            .order_by("assignee__username"))
    return [{"user": r["assignee__username"], "total": r["total"], "done": r["done"], "open": r["total"] - r["done"],
             "percent": round(100 * r["done"] / r["total"]) if r["total"] else 100} for r in rows]


# --- Judge comparison report ------------------------------------------------------------------


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
            leaf_pairs=[LeafPair(tree.plan.categories[i], _cell_score(ref_cells.get(i)), _cell_score(cand_cells.get(i)))
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


def report_csv(report: dict[str, Any]) -> str:
    """The per-submission table, then the summary as key/value rows."""
    body: list[list[Any]] = [[s["label"], s["reference"], s["candidate"], s["difference"], s["reference_cost"],
                              s["candidate_cost"]] for s in report["submissions"]]
    body.append([])
    for name, c in report["correlations"].items():
        body.append([name, c["value"], c["ci_low"], c["ci_high"]])
    overall = report["leaves"]["overall"]
    body.append(["macro_f1", overall["f1"]])
    body.append(["kappa", overall["kappa"]])
    body.append(["order_flips", len(report["flips"]), "of", report["pairs"]])
    body.append(["verdict", report["verdict"], report["metric"], report["threshold"]])
    return write_csv(["submission", f"reference: {report['reference']}", f"candidate: {report['candidate']}",
                      "difference", "reference cost", "candidate cost"], body)


# --- Rubric what-if -------------------------------------------------------------------------------


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
    return {"paper": paper.slug, "tree": label, "leaves": sum(plan.is_leaf), "judges": judges,
            "runs": len(runs), "rank_changes": sum(j["changed"] for j in judges)}
