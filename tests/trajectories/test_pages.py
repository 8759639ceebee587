from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.papers.models import Paper
from apps.trajectories.models import Trajectory, TurnAnnotation
from tests.support.streaming import streamed
from tests.trajectories.factories import make_trajectory

pytestmark = pytest.mark.django_db

GOOD = (b'{"klong_trajectory": 1, "task": "t1"}\n{"role": "user", "text": "hi"}\n'
        b'{"role": "assistant", "text": "hello"}\n')
BAD = GOOD + b'{"role": "assistant", "text": \n'


def test_the_list_filters_by_paper_model_end_state_score_and_length(client_for):
    paper = Paper.objects.create(slug="bam", title="BAM")
    make_trajectory(10, title="keep", paper=paper, model_name="claude", end_state="submitted", final_score=0.6)
    make_trajectory(10, title="other model", paper=paper, model_name="gpt", end_state="submitted", final_score=0.6)
    make_trajectory(10, title="low score", paper=paper, model_name="claude", end_state="submitted", final_score=0.1)
    make_trajectory(40, title="too long", paper=paper, model_name="claude", end_state="submitted", final_score=0.6)
    make_trajectory(10, title="timed out", paper=paper, model_name="claude", end_state="timed_out", final_score=0.6)
    response = client_for("viewer").get("/trajectories/", {
        "paper": "bam", "model": "clau", "end_state": "submitted", "score_min": "0.5", "score_max": "1",
        "turns_max": "20",
    })
    assert [t.title for t in response.context["page"].object_list] == ["keep"]


def test_the_list_sorts_by_length(client_for):
    for n in (5, 30, 12):
        make_trajectory(n, title=f"run {n}")
    response = client_for("viewer").get("/trajectories/?sort=-turns")
    assert [t.turn_count for t in response.context["page"].object_list] == [30, 12, 5]


def test_the_list_is_paginated(client_for):
    for i in range(30):
        Trajectory.objects.create(title=f"run {i}")
    response = client_for("viewer").get("/trajectories/?page=2")
    assert len(response.context["page"].object_list) == 5


def test_the_detail_page_of_a_1000_turn_run_sends_an_index_not_the_text(client_for):
    trajectory = make_trajectory(1000, texts={i: "x" * 4000 for i in range(2, 1000, 2)})
    response = client_for("viewer").get(f"/trajectories/{trajectory.pk}/")
    html = response.content.decode()
    assert response.status_code == 200
    assert len(response.content) < 1_000_000 and "x" * 100 not in html
    index = response.context["turn_index"]
    assert len(index["role"]) == 1000 and index["role"][:4] == ["s", "u", "a", "t"]


def test_agent_text_in_the_detail_page_is_escaped(client_for):
    trajectory = make_trajectory(4, texts={2: "<script>alert(1)</script>"}, title="<b>bold</b>")
    html = client_for("viewer").get(f"/trajectories/{trajectory.pk}/").content.decode()
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html


def test_turns_touching_a_blacklisted_url_are_flagged(client_for):
    paper = Paper.objects.create(slug="bam", title="BAM", blacklist=["https://github.com/authors/bam"])
    trajectory = make_trajectory(6, paper=paper, texts={3: "git clone https://github.com/authors/bam"})
    response = client_for("viewer").get(f"/trajectories/{trajectory.pk}/")
    assert response.context["turn_index"]["flagged"] == [3]


def test_an_upload_imports_the_file_and_answers_with_the_new_ids(client_for):
    response = client_for("curator").post(
        "/trajectories/import/", {"file": SimpleUploadedFile("run.jsonl", GOOD)}, HTTP_ACCEPT="application/json"
    )
    body = response.json()
    assert response.status_code == 201
    trajectory = Trajectory.objects.get(pk=body["trajectories"][0]["id"])
    assert trajectory.source_format == "klong-jsonl" and trajectory.turn_count == 2
    assert trajectory.source_name == "run.jsonl [line 1]"
    assert body["redirect"] == f"/trajectories/{trajectory.pk}/"


def test_a_bad_upload_is_refused_with_the_position_and_nothing_imported(client_for):
    response = client_for("curator").post(
        "/trajectories/import/", {"file": SimpleUploadedFile("run.jsonl", BAD)}, HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 400
    assert response.json()["position"] == "line 4" and "line 4" in response.json()["detail"]
    assert Trajectory.objects.count() == 0


def test_a_bad_upload_without_javascript_shows_the_error_on_the_form(client_for):
    response = client_for("curator").post("/trajectories/import/", {"file": SimpleUploadedFile("run.jsonl", BAD)})
    assert response.status_code == 400 and b"line 4" in response.content


def test_an_upload_with_skip_bad_lists_the_skipped_records(client_for):
    response = client_for("curator").post(
        "/trajectories/import/", {"file": SimpleUploadedFile("run.jsonl", BAD + GOOD), "skip_bad": "on"},
        HTTP_ACCEPT="application/json",
    )
    body = response.json()
    assert response.status_code == 201 and len(body["trajectories"]) == 1
    assert body["skipped"] and body["skipped"][0].startswith("run.jsonl: line 4")


def test_an_upload_over_the_size_limit_gets_413_with_a_message(client_for, settings):
    settings.KLONG_MAX_UPLOAD_BYTES = 2048
    response = client_for("curator").post(
        "/trajectories/import/", {"file": SimpleUploadedFile("big.jsonl", GOOD * 100)}, HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 413
    assert "limit" in response.json()["detail"] and Trajectory.objects.count() == 0


def test_a_large_upload_is_imported_by_a_job(client_for, settings):
    settings.KLONG_IMPORT_INLINE_BYTES = 10
    response = client_for("curator").post(
        "/trajectories/import/", {"file": SimpleUploadedFile("run.jsonl", GOOD)}, HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 202 and response.json()["redirect"].startswith("/jobs/")


def test_a_viewer_cannot_upload(client_for):
    assert client_for("viewer").get("/trajectories/import/").status_code == 403
    response = client_for("viewer").post("/trajectories/import/", {"file": SimpleUploadedFile("r.jsonl", GOOD)})
    assert response.status_code == 403 and Trajectory.objects.count() == 0


def test_an_outsider_cannot_read_trajectories(client_for):
    trajectory = make_trajectory(4)
    assert client_for("outsider").get("/trajectories/").status_code == 403
    assert client_for("outsider").get(f"/trajectories/{trajectory.pk}/").status_code == 403


def test_anonymous_users_are_sent_to_the_login_page(client):
    response = client.get("/trajectories/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_rejection_needs_a_reason(client_for):
    trajectory = make_trajectory(4)
    client_for("curator").post(f"/trajectories/{trajectory.pk}/review/", {"review": "rejected", "reason": ""})
    trajectory.refresh_from_db()
    assert trajectory.review == ""


def test_a_curator_accepts_a_trajectory(client_for, personas):
    trajectory = make_trajectory(4)
    client_for("curator").post(f"/trajectories/{trajectory.pk}/review/", {"review": "accepted", "reason": "clean"})
    trajectory.refresh_from_db()
    assert trajectory.review == "accepted" and trajectory.reviewed_by == personas["curator"]


def test_annotations_export_as_json_lines(client_for, personas):
    from apps.trajectories.models import AnnotationLabel
    from apps.trajectories.services import ensure_default_labels

    ensure_default_labels()
    trajectory = make_trajectory(4)
    TurnAnnotation.objects.create(trajectory=trajectory, turn_index=2, note="made up",
                                  label=AnnotationLabel.objects.get(name="fabricated result"), author=personas["curator"])
    response = client_for("viewer").get("/trajectories/annotations.jsonl?label=fabricated+result")
    rows = [json.loads(line) for line in streamed(response).decode().splitlines()]
    assert rows == [{"trajectory": trajectory.pk, "turn": 2, "label": "fabricated result", "note": "made up",
                     "author": "curator", "created_at": rows[0]["created_at"]}]


def test_the_annotations_export_streams_in_batches_in_trajectory_and_turn_order(client_for, monkeypatch):
    from apps.trajectories import exports
    from apps.trajectories.models import AnnotationLabel

    monkeypatch.setattr(exports, "ANNOTATION_BATCH", 2)
    label = AnnotationLabel.objects.create(name="bug")
    first, second = make_trajectory(6), make_trajectory(6)
    for trajectory, turn in ((second, 1), (first, 4), (first, 1), (second, 1), (first, 4)):
        TurnAnnotation.objects.create(trajectory=trajectory, turn_index=turn, label=label)
    response = client_for("viewer").get("/trajectories/annotations.jsonl")
    # Asynchronous content: daphne sends it as it is read; a synchronous one it would read whole first.
    assert response.streaming and response.is_async and response["Content-Type"] == "application/x-ndjson"
    rows = [json.loads(line) for line in streamed(response).decode().splitlines()]
    assert [(r["trajectory"], r["turn"]) for r in rows] == [
        (first.pk, 1), (first.pk, 4), (first.pk, 4), (second.pk, 1), (second.pk, 1)]


def test_an_annotations_export_of_a_trajectory_that_is_not_an_id_is_a_400(client_for):
    response = client_for("viewer").get("/trajectories/annotations.jsonl?trajectory=abc")
    assert response.status_code == 400 and b"trajectory must be a trajectory id" in response.content


def test_an_upload_larger_than_memory_is_spooled_to_disk_and_imported(client_for):
    # Above FILE_UPLOAD_MAX_MEMORY_SIZE (2 MiB) Django streams the upload to a temp file.
    turns = b"".join(b'{"role": "tool", "text": "' + b"x" * 1000 + b'"}\n' for _ in range(3000))
    body = b'{"klong_trajectory": 1}\n' + turns
    response = client_for("curator").post(
        "/trajectories/import/", {"file": SimpleUploadedFile("big.jsonl", body)}, HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 201 and response.json()["trajectories"][0]["turns"] == 3000


def test_the_viewer_index_carries_annotations_with_note_author_and_date(client_for, personas):
    from apps.trajectories.models import AnnotationLabel
    from apps.trajectories.services import ensure_default_labels

    ensure_default_labels()
    trajectory = make_trajectory(6)
    TurnAnnotation.objects.create(trajectory=trajectory, turn_index=3, note="loops", author=personas["curator"],
                                  label=AnnotationLabel.objects.get(name="error"))
    index = client_for("viewer").get(f"/trajectories/{trajectory.pk}/").context["turn_index"]
    [[label, note, author, _date]] = index["annotations"][3]
    assert (label, note, author) == ("error", "loops", "curator")
