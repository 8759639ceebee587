"""Annotation queues of trajectories: turns or runs to label, shared among users, with progress,
skip and undo (the rubric-leaf queues of apps/audit, for trajectories).

Items are handed out one at a time: ``next_item`` claims the first open item nobody holds with a
conditional update (the row count says whether this user won it), and the claim lapses after
LOCK_S, so an item left open in a closed tab goes back to the others. Grading writes what the
viewer writes (a turn annotation, or the run's review) through the same service functions, and
keeps what it wrote on the item, so ``undo_last`` takes exactly that back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from apps.trajectories import services
from apps.trajectories.models import AnnotationLabel, AnnotationQueue, QueueItem, Trajectory, Turn

LOCK_S = 15 * 60
# Turns of context shown above a queued turn.
CONTEXT_TURNS = 3


@transaction.atomic
def create_queue(*, name: str, unit: str, trajectories: QuerySet[Trajectory], user: Any, contains: str = "",
                 instructions: str = "") -> AnnotationQueue:
    """A queue of the given runs (unit "runs"), or of their assistant turns (unit "turns"), only
    those whose text contains ``contains`` when given; at most KLONG_ANNOTATION_QUEUE_MAX_ITEMS."""
    if unit not in AnnotationQueue.Unit.values:
        raise ValidationError(f"unit must be one of {', '.join(AnnotationQueue.Unit.values)}, not {unit!r}")
    limit = settings.KLONG_ANNOTATION_QUEUE_MAX_ITEMS
    if unit == AnnotationQueue.Unit.RUNS:
        rows = [(pk, None) for pk in trajectories.order_by("pk").values_list("pk", flat=True)[:limit + 1]]
    else:
        turns = Turn.objects.filter(trajectory__in=trajectories.values("pk"), role=Turn.Role.ASSISTANT)
        if contains:
            turns = turns.filter(text__icontains=contains)
        rows = list(turns.order_by("trajectory_id", "index").values_list("trajectory_id", "index")[:limit + 1])
    if not rows:
        raise ValidationError("Nothing to queue: no " + ("trajectories" if unit == "runs" else "assistant turns")
                              + " match" + (f" {contains!r}" if contains else "") + ".")
    if len(rows) > limit:
        raise ValidationError(f"More than {limit:,} items would be queued (KLONG_ANNOTATION_QUEUE_MAX_ITEMS): "
                              "narrow the selection with the list's filters or a text to look for.")
    queue = AnnotationQueue.objects.create(name=name.strip()[:200] or f"{unit} queue", unit=unit,
                                           instructions=instructions.strip(), created_by=user)
    QueueItem.objects.bulk_create([QueueItem(queue=queue, position=k, trajectory_id=pk, turn_index=turn)
                                   for k, (pk, turn) in enumerate(rows)], batch_size=1000)
    return queue


def next_item(queue: AnnotationQueue, user: Any) -> QueueItem | None:
    """The item ``user`` works on now: the one they hold, else the first open item nobody holds
    (claimed for them); None when every item is labelled, skipped or held by someone else."""
    now = timezone.now()
    held = queue.items.filter(state=QueueItem.State.OPEN, locked_by=user, locked_until__gt=now).order_by("position")
    if (item := held.first()) is not None:
        return item
    free = Q(locked_by__isnull=True) | Q(locked_until__lte=now)
    for _attempt in range(5):  # another user may win the first candidate: try the next
        candidate = queue.items.filter(free, state=QueueItem.State.OPEN).order_by("position").first()
        if candidate is None:
            return None
        claimed = QueueItem.objects.filter(free, pk=candidate.pk, state=QueueItem.State.OPEN).update(
            locked_by=user, locked_until=now + timedelta(seconds=LOCK_S))
        if claimed == 1:
            candidate.refresh_from_db()
            return candidate
    return None


def _open_item_of(queue: AnnotationQueue, item_id: int, user: Any) -> QueueItem:
    item = QueueItem.objects.select_for_update().filter(queue=queue, pk=item_id).first()
    if item is None:
        raise ValidationError("That item is not in this queue.")
    if item.state != QueueItem.State.OPEN:
        raise ValidationError(f"Item {item.position + 1} is already {item.get_state_display().lower()}.")
    if item.locked_by_id not in (None, user.pk) and item.locked_until and item.locked_until > timezone.now():
        raise ValidationError(f"{item.locked_by.get_username()} is working on item {item.position + 1}.")
    return item


def _finish(item: QueueItem, user: Any, state: str) -> QueueItem:
    item.state, item.done_by, item.done_at = state, user, timezone.now()
    item.locked_by, item.locked_until = None, None
    item.save()
    return item


@transaction.atomic
def label_item(queue: AnnotationQueue, item_id: int, user: Any, *, label: str = "", review: str = "",
               note: str = "") -> QueueItem:
    """Grade an open item: a turn gets ``label`` (an annotation, with ``note``); a run gets
    ``review`` (accepted / rejected, ``note`` its reason)."""
    item = _open_item_of(queue, item_id, user)
    if item.turn_index is not None:
        found = AnnotationLabel.objects.filter(name=label).first()
        if found is None:
            raise ValidationError(f"No label {label!r}: pick one of the listed labels.")
        item.annotation = services.annotate_turn(item.trajectory, item.turn_index, found, note, user)
    else:
        trajectory = item.trajectory
        item.previous_review = {"review": trajectory.review, "reason": trajectory.review_reason,
                                "by": trajectory.reviewed_by_id,
                                "at": trajectory.reviewed_at.isoformat() if trajectory.reviewed_at else None}
        try:
            services.review_trajectory(trajectory, review, note, user)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
    return _finish(item, user, QueueItem.State.DONE)


@transaction.atomic
def skip_item(queue: AnnotationQueue, item_id: int, user: Any) -> QueueItem:
    return _finish(_open_item_of(queue, item_id, user), user, QueueItem.State.SKIPPED)


@transaction.atomic
def undo_last(queue: AnnotationQueue, user: Any) -> QueueItem:
    """Take back ``user``'s last grade or skip in this queue; the item is theirs again, open."""
    item = (queue.items.select_for_update().filter(done_by=user).exclude(state=QueueItem.State.OPEN)
            .order_by("-done_at", "-pk").first())
    if item is None:
        raise ValidationError("Nothing of yours to undo in this queue.")
    if item.state == QueueItem.State.DONE:
        if item.turn_index is not None and item.annotation_id:
            item.annotation.delete()
        elif item.turn_index is None:
            _restore_review(item)
    item.state, item.done_by, item.done_at, item.annotation, item.previous_review = (
        QueueItem.State.OPEN, None, None, None, {})
    item.locked_by, item.locked_until = user, timezone.now() + timedelta(seconds=LOCK_S)
    item.save()
    return item


def _restore_review(item: QueueItem) -> None:
    before = item.previous_review or {}
    trajectory = item.trajectory
    trajectory.review = before.get("review", "")
    trajectory.review_reason = before.get("reason", "")
    trajectory.reviewed_by_id = before.get("by")
    trajectory.reviewed_at = before.get("at")
    trajectory.save(update_fields=["review", "review_reason", "reviewed_by", "reviewed_at"])


@dataclass(frozen=True)
class Progress:
    total: int
    done: int
    skipped: int
    by_user: list[dict[str, Any]]

    @property
    def open(self) -> int:
        return self.total - self.done - self.skipped

    @property
    def percent(self) -> int:
        return round(100 * (self.done + self.skipped) / self.total) if self.total else 100


def progress(queue: AnnotationQueue) -> Progress:
    counts = queue.items.aggregate(total=Count("pk"), done=Count("pk", filter=Q(state=QueueItem.State.DONE)),
                                   skipped=Count("pk", filter=Q(state=QueueItem.State.SKIPPED)))
    by_user = list(queue.items.exclude(done_by=None).values("done_by__username")
                   .annotate(done=Count("pk", filter=Q(state=QueueItem.State.DONE)),
                             skipped=Count("pk", filter=Q(state=QueueItem.State.SKIPPED)))
                   .order_by("-done", "done_by__username"))
    return Progress(counts["total"], counts["done"], counts["skipped"],
                    [{"user": r["done_by__username"], "done": r["done"], "skipped": r["skipped"]} for r in by_user])


def recent_items(queue: AnnotationQueue, limit: int = 20) -> QuerySet[QueueItem]:
    """The last labelled or skipped items, newest first."""
    return (queue.items.exclude(done_by=None).select_related("trajectory", "done_by", "annotation__label")
            .order_by("-done_at")[:limit])


def has_graded(queue: AnnotationQueue, user: Any) -> bool:
    """Whether ``user`` has something to undo in this queue."""
    return queue.items.filter(done_by=user).exists()


def item_context(item: QueueItem) -> dict[str, Any]:
    """What the labelling page shows: the turn and the turns before it, or the run's task and its
    last answer."""
    trajectory = item.trajectory
    if item.turn_index is not None:
        turns = list(trajectory.turns.filter(index__gte=max(0, item.turn_index - CONTEXT_TURNS),
                                             index__lte=item.turn_index).order_by("index"))
        context, turn = turns[:-1], turns[-1] if turns else None
    else:
        first_user = trajectory.turns.filter(role=Turn.Role.USER).order_by("index").first()
        context, turn = [t for t in (first_user,) if t], trajectory.turns.filter(
            role=Turn.Role.ASSISTANT).order_by("-index").first()
    calls = [(call.get("name") or "(tool)", call["arguments"] if isinstance(call.get("arguments"), str)
              else json.dumps(call.get("arguments"), indent=2, ensure_ascii=False))
             for call in (turn.tool_calls if turn else []) if isinstance(call, dict)]
    return {"context": context, "turn": turn, "calls": calls}
