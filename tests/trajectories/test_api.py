from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from apps.trajectories.models import Trajectory, TurnAnnotation
from apps.trajectories.services import ensure_default_labels
from tests.trajectories.factories import make_trajectory
from tests.trajectories.test_pages import BAD, GOOD

pytestmark = pytest.mark.django_db


@pytest.fixture
def api_for(personas):
    def make(role: str) -> APIClient:
        client = APIClient()
        client.force_authenticate(personas[role])
        return client

    return make


def test_the_api_imports_a_multipart_upload(api_for):
    response = api_for("curator").post("/api/trajectories/import/", {"file": SimpleUploadedFile("r.jsonl", GOOD)},
                                       format="multipart")
    assert response.status_code == 201
    assert response.json()["trajectories"][0]["format"] == "klong-jsonl"
    assert response.json()["estimated_tokens"] is True


def test_the_api_refuses_a_bad_file_with_the_position(api_for):
    response = api_for("curator").post("/api/trajectories/import/", {"file": SimpleUploadedFile("r.jsonl", BAD)},
                                       format="multipart")
    assert response.status_code == 400 and response.json()["position"] == "line 4"
    assert Trajectory.objects.count() == 0


def test_the_api_refuses_a_file_over_the_limit_with_413(api_for, settings):
    settings.KLONG_MAX_UPLOAD_BYTES = 2048
    response = api_for("curator").post("/api/trajectories/import/",
                                       {"file": SimpleUploadedFile("r.jsonl", GOOD * 100)}, format="multipart")
    assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_a_viewer_reads_but_cannot_import_through_the_api(api_for):
    make_trajectory(4)
    assert api_for("viewer").get("/api/trajectories/").status_code == 200
    response = api_for("viewer").post("/api/trajectories/import/", {"file": SimpleUploadedFile("r.jsonl", GOOD)},
                                      format="multipart")
    assert response.status_code == 403 and Trajectory.objects.count() == 1


def test_an_outsider_gets_403_from_the_api(api_for):
    trajectory = make_trajectory(4)
    assert api_for("outsider").get("/api/trajectories/").status_code == 403
    assert api_for("outsider").get(f"/api/trajectories/{trajectory.pk}/turns/").status_code == 403


def test_anonymous_api_calls_get_401():
    assert APIClient().get("/api/trajectories/").status_code == 401
    assert APIClient().post("/api/trajectories/import/").status_code == 401


def test_turns_come_in_chunks_with_their_text(api_for):
    trajectory = make_trajectory(250)
    body = api_for("viewer").get(f"/api/trajectories/{trajectory.pk}/turns/?start=100&end=200").json()
    assert [t["i"] for t in body["turns"]] == list(range(100, 200))
    assert body["turns"][0]["text"] == "turn 100 says assistant things"


def test_search_returns_the_matching_turns_in_order(api_for):
    trajectory = make_trajectory(30, texts={5: "a NEEDLE here", 17: "needle again", 20: "nothing"})
    body = api_for("viewer").get(f"/api/trajectories/{trajectory.pk}/search/?q=needle").json()
    assert body["turns"] == [5, 17]


def test_the_list_api_takes_the_page_filters(api_for):
    make_trajectory(5, title="short")
    make_trajectory(50, title="long")
    body = api_for("viewer").get("/api/trajectories/?turns_min=10").json()
    assert [t["title"] for t in body["results"]] == ["long"]


def test_annotations_are_added_and_filtered_by_label(api_for, personas):
    ensure_default_labels()
    trajectory = make_trajectory(10)
    client = api_for("curator")
    created = client.post(f"/api/trajectories/{trajectory.pk}/annotations/",
                          {"turn_index": 4, "label": "error", "note": "wrong file"}, format="json")
    client.post(f"/api/trajectories/{trajectory.pk}/annotations/", {"turn_index": 6, "label": "good recovery"},
                format="json")
    assert created.status_code == 201 and created.json()["author"] == "curator"
    listed = api_for("viewer").get(f"/api/trajectories/{trajectory.pk}/annotations/?label=error").json()
    assert [(a["turn_index"], a["note"]) for a in listed] == [(4, "wrong file")]


def test_a_viewer_cannot_annotate(api_for):
    ensure_default_labels()
    trajectory = make_trajectory(10)
    response = api_for("viewer").post(f"/api/trajectories/{trajectory.pk}/annotations/",
                                      {"turn_index": 4, "label": "error"}, format="json")
    assert response.status_code == 403 and TurnAnnotation.objects.count() == 0


def test_a_turn_outside_the_trajectory_cannot_be_annotated(api_for):
    ensure_default_labels()
    trajectory = make_trajectory(10)
    response = api_for("curator").post(f"/api/trajectories/{trajectory.pk}/annotations/",
                                       {"turn_index": 99, "label": "error"}, format="json")
    assert response.status_code == 400


def test_a_no_loss_mark_is_set_and_cleared(api_for):
    trajectory = make_trajectory(10)
    client = api_for("curator")
    assert client.post(f"/api/trajectories/{trajectory.pk}/no-loss/", {"turn": 4, "no_loss": True},
                       format="json").json() == {"turn": 4, "no_loss": True}
    assert trajectory.turns.get(index=4).no_loss
    client.post(f"/api/trajectories/{trajectory.pk}/no-loss/", {"turn": 4, "no_loss": False}, format="json")
    assert not trajectory.turns.get(index=4).no_loss


def test_the_api_rejects_a_trajectory_with_a_reason(api_for):
    trajectory = make_trajectory(4)
    response = api_for("curator").post(f"/api/trajectories/{trajectory.pk}/review/",
                                       {"review": "rejected", "reason": "touched the authors' repo"}, format="json")
    assert response.status_code == 200 and response.json()["review"] == "rejected"


def test_labels_are_an_editable_set(api_for):
    ensure_default_labels()
    response = api_for("curator").post("/api/annotation-labels/", {"name": "stuck in a loop"}, format="json")
    assert response.status_code == 201
    names = [label["name"] for label in api_for("viewer").get("/api/annotation-labels/").json()["results"]]
    assert "stuck in a loop" in names and "error" in names


def test_the_prefix_is_pinned_and_unpinned_through_the_api(api_for):
    trajectory = make_trajectory(10)
    client = api_for("curator")
    assert client.post(f"/api/trajectories/{trajectory.pk}/prefix/", {"prefix_end": 3},
                       format="json").json()["prefix_end"] == 3
    assert client.post(f"/api/trajectories/{trajectory.pk}/prefix/", {"prefix_end": 30},
                       format="json").status_code == 400
    client.post(f"/api/trajectories/{trajectory.pk}/prefix/", {"prefix_end": None}, format="json")
    trajectory.refresh_from_db()
    assert trajectory.prefix_end is None


@pytest.mark.django_db
def test_turn_chunks_carry_sanitised_markdown_for_messages_but_not_tool_output(client_for):
    from apps.trajectories.models import Trajectory, Turn

    trajectory = Trajectory.objects.create(title="md", turn_count=2)
    Turn.objects.create(trajectory=trajectory, index=0, role="assistant",
                        text="**Plan**\n\n```python\nprint(1)\n```\n<script>alert(1)</script><img src=x onerror=alert(2)>")
    Turn.objects.create(trajectory=trajectory, index=1, role="tool", text="**not markdown**")
    turns = client_for("viewer").get(f"/api/trajectories/{trajectory.pk}/turns/").json()["turns"]
    html = turns[0]["html"]
    assert "<strong>Plan</strong>" in html and "<pre><code" in html
    # HTML the agent wrote is shown as text; no tag of its own survives, images included.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script" not in html and "<img" not in html
    assert turns[1]["html"] == ""
