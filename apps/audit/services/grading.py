"""Human grading: a user's own 0/1 grade of a leaf, kept in their human run for the submission."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.audit.models import AuditItem
from apps.audit.services.submissions import same_submission, submission_key, submission_of
from apps.audit.services.trees import Tree, tree_of
from apps.core.domain import Conflict
from apps.judging.models import JudgeRun, LeafGrade

MAX_NOTE_CHARS = 10_000


def own_human_run(base: JudgeRun, user) -> JudgeRun | None:
    """The user's human grading of the base run's submission on the base run's rubric version."""
    return (JudgeRun.objects.filter(same_submission(base), kind=JudgeRun.Kind.HUMAN, graded_by=user,
                                    paper_id=base.paper_id, rubric_version_id=base.rubric_version_id)
            .order_by("pk").first())


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
            submission=base.submission if base.trajectory_id else submission_of(base),
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
    rescore(run, tree)
    _queue_items(base, index, user).filter(done_at__isnull=True).update(done_at=now)
    return grade


def _queue_items(base: JudgeRun, index: int, user):
    """The user's audit items of this leaf, in every queue over the base run's submission and version."""
    return AuditItem.objects.filter(queue__paper_id=base.paper_id, queue__submission_key=submission_key(base),
                                    queue__base_run__rubric_version_id=base.rubric_version_id, node_index=index,
                                    assignee=user)


class GradeChanged(Conflict):
    """The grade to undo is no longer the one saved (changed meanwhile, e.g. in another tab): 409."""


@transaction.atomic
def undo_grade(*, base: JudgeRun, node_index: Any, user, saved: tuple[float, str],
               previous: tuple[float, str] | None) -> LeafGrade | None:
    """Put the user's grade of one leaf back as it was before they saved ``saved``.

    ``previous`` is that earlier grade (score, note), or None: then the grade is removed and the
    leaf is open again in the user's audit queues. Nothing changes unless the grade is still
    ``saved``, so an undo never overwrites a later grade.
    """
    index = _check_leaf(base, node_index)
    JudgeRun.objects.select_for_update().filter(pk=base.pk).first()
    run = own_human_run(base, user)
    grade = run.grades.filter(node_index=index).first() if run is not None else None
    if grade is None or (grade.score, grade.explanation) != (float(saved[0]), saved[1]):
        raise GradeChanged("Your grade of this leaf changed since you saved it (in another tab?): nothing was undone.")
    if previous is not None:
        return grade_leaf(base=base, node_index=index, score=previous[0], note=previous[1], user=user)
    grade.delete()
    rescore(run, tree_of(base.rubric_version))
    _queue_items(base, index, user).update(done_at=None)
    return None


def rescore(run: JudgeRun, tree: Tree) -> None:
    """The human run's root score and node scores from its grades as they are now."""
    grades = dict(run.grades.values_list("node_index", "score"))
    scores = tree.plan.score({i: s for i, s in grades.items() if s is not None})
    JudgeRun.objects.filter(pk=run.pk).update(
        score=scores[0], n_leaves=len(grades), node_scores={"scores": scores, "invalid": [], "graded": []},
    )
