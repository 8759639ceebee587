"""Annotation queues of trajectories: shared among graders, with progress, skip and undo."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from apps.trajectories import queues
from apps.trajectories.models import AnnotationQueue, QueueItem, Trajectory, TurnAnnotation
from apps.trajectories.services import ensure_default_labels
from tests.trajectories.factories import make_trajectory

pytestmark = pytest.mark.django_db


@pytest.fixture
def runs():
    ensure_default_labels()
    return [make_trajectory(8, texts={4: "the agent trains the model"}), make_trajectory(6)]


def _turn_queue(runs, user, **kwargs) -> AnnotationQueue:
    return queues.create_queue(name="errors", unit="turns", user=user,
                               trajectories=Trajectory.objects.filter(pk__in=[r.pk for r in runs]), **kwargs)


def test_a_turn_queue_holds_the_assistant_turns_of_the_selection_or_those_containing_a_text(runs, personas):
    queue = _turn_queue(runs, personas["curator"])
    assert [(i.trajectory_id, i.turn_index) for i in queue.items.all()] == (
        [(runs[0].pk, k) for k in (2, 4, 6)] + [(runs[1].pk, k) for k in (2, 4)])
    only = _turn_queue(runs, personas["curator"], contains="TRAINS")
    assert [(i.trajectory_id, i.turn_index) for i in only.items.all()] == [(runs[0].pk, 4)]


def test_a_queue_larger_than_the_limit_is_refused_naming_the_setting(runs, personas, settings):
    settings.KLONG_ANNOTATION_QUEUE_MAX_ITEMS = 4
    with pytest.raises(ValidationError, match="KLONG_ANNOTATION_QUEUE_MAX_ITEMS"):
        _turn_queue(runs, personas["curator"])
    assert not AnnotationQueue.objects.exists()


def test_two_graders_get_different_items_and_a_lapsed_claim_goes_to_the_next(runs, personas):
    queue = _turn_queue(runs, personas["curator"])
    first, second = queues.next_item(queue, personas["curator"]), queues.next_item(queue, personas["admin"])
    assert first.position == 0 and second.position == 1
    assert queues.next_item(queue, personas["curator"]).pk == first.pk  # still theirs
    QueueItem.objects.filter(pk=first.pk).update(locked_until=timezone.now() - timedelta(seconds=1))
    assert queues.next_item(queue, personas["admin"]).pk == second.pk
    QueueItem.objects.filter(pk=second.pk).update(state=QueueItem.State.DONE)
    assert queues.next_item(queue, personas["admin"]).pk == first.pk


def test_labelling_writes_the_annotation_and_undo_takes_exactly_that_back(runs, personas):
    curator = personas["curator"]
    queue = _turn_queue(runs, curator)
    item = queues.next_item(queue, curator)
    queues.label_item(queue, item.pk, curator, label="error", note="wrong file")
    annotation = TurnAnnotation.objects.get()
    assert (annotation.turn_index, annotation.label.name, annotation.note) == (2, "error", "wrong file")
    skipped = queues.next_item(queue, curator)
    queues.skip_item(queue, skipped.pk, curator)
    progress = queues.progress(queue)
    assert (progress.done, progress.skipped, progress.open) == (1, 1, 3)
    assert progress.by_user == [{"user": curator.username, "done": 1, "skipped": 1}]
    assert queues.undo_last(queue, curator).pk == skipped.pk  # the last thing done first
    assert queues.undo_last(queue, curator).pk == item.pk
    assert not TurnAnnotation.objects.exists()
    assert queues.next_item(queue, curator).pk == item.pk and queues.progress(queue).open == 5
    with pytest.raises(ValidationError, match="Nothing of yours to undo"):
        queues.undo_last(queue, personas["admin"])


def test_a_run_queue_reviews_the_run_and_undo_restores_the_review_before(runs, personas):
    curator = personas["curator"]
    runs[0].review, runs[0].review_reason = "rejected", "loops"
    runs[0].save()
    queue = queues.create_queue(name="runs", unit="runs", user=curator, trajectories=Trajectory.objects.all())
    item = queues.next_item(queue, curator)
    with pytest.raises(ValidationError, match="a rejection needs a reason"):
        queues.label_item(queue, item.pk, curator, review="rejected")
    queues.label_item(queue, item.pk, curator, review="accepted", note="clean run")
    runs[0].refresh_from_db()
    assert (runs[0].review, runs[0].review_reason, runs[0].reviewed_by) == ("accepted", "clean run", curator)
    queues.undo_last(queue, curator)
    runs[0].refresh_from_db()
    assert (runs[0].review, runs[0].review_reason) == ("rejected", "loops")


def test_an_item_someone_else_holds_cannot_be_labelled_by_another(runs, personas):
    queue = _turn_queue(runs, personas["curator"])
    item = queues.next_item(queue, personas["curator"])
    with pytest.raises(ValidationError, match=f"{personas['curator'].username} is working on item 1"):
        queues.label_item(queue, item.pk, personas["admin"], label="error")


def test_the_pages_make_a_queue_from_the_list_filters_and_label_through_it(runs, client_for):
    client = client_for("curator")
    response = client.post("/trajectories/queues/", {"name": "short runs", "unit": "turns", "turns_max": "6"})
    queue = AnnotationQueue.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/trajectories/queues/{queue.pk}/"
    assert queue.items.count() == 2  # the 6-turn run's assistant turns only
    page = client.get(f"/trajectories/queues/{queue.pk}/label/")
    item = page.context["item"]
    assert page.context["turn"].index == item.turn_index and "turn 2 says assistant things" in page.content.decode()
    client.post(f"/trajectories/queues/{queue.pk}/label/", {"action": "label", "item": item.pk, "label": "error"})
    assert TurnAnnotation.objects.get().label.name == "error"
    bad = client.post(f"/trajectories/queues/{queue.pk}/label/", {"action": "label", "item": item.pk, "label": "error"})
    assert bad.status_code == 400 and "already labelled" in bad.content.decode()
    empty = client.post("/trajectories/queues/", {"unit": "turns", "contains": "no such text"})
    assert empty.status_code == 400 and "Nothing to queue" in empty.content.decode()
