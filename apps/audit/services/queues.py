"""Audit queues: the leaves where compared runs disagree, shared among graders; progress per user."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from apps.audit.models import AuditItem, AuditQueue
from apps.audit.services.comparison import build_comparison
from apps.audit.services.grading import own_human_run
from apps.audit.services.submissions import submission_key
from apps.audit.services.trees import tree_of
from apps.core.roles import perm
from apps.rubrics.paperbench import node_number


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


def queue_items(queue: AuditQueue) -> list[dict[str, Any]]:
    """The queue's leaves with what a grader needs to see: number and requirement text."""
    nodes = tree_of(queue.base_run.rubric_version).nodes
    out = []
    for item in queue.items.select_related("assignee"):
        node = nodes[item.node_index] if item.node_index < len(nodes) else None
        out.append({"item": item, "number": node_number(nodes, item.node_index) if node else "?",
                    "requirements": str(node.requirements or "") if node else ""})
    return out


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
