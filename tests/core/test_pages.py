from __future__ import annotations

import pytest

from apps.jobs.models import Job
from apps.papers.models import Paper

pytestmark = pytest.mark.django_db


@pytest.mark.embedded
def test_the_home_page_sends_anonymous_users_to_the_login_page(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"


def test_the_dashboard_shows_counts_recent_jobs_and_services(client_for, personas):
    Paper.objects.create(slug="p1", title="A paper")
    Job.objects.create(kind="selftest", title="My self-test", created_by=personas["operator"])
    response = client_for("viewer").get("/")
    html = response.content.decode()
    assert response.status_code == 200
    counts = response.context["counts"]
    assert counts["Papers"] == 1 and counts["Jobs"] == 1
    assert "My self-test" in html
    checks = {c.name: c for c in response.context["checks"]}
    assert checks["database"].ok and checks["redis"].ok


def test_the_dashboard_tells_workers_by_their_heartbeats_without_a_ping(client_for):
    import time

    from apps.jobs.heartbeats import heartbeats_key, redis_client
    from worker.heartbeat import beat

    redis_client().delete(heartbeats_key())
    checks = {c.name: c for c in client_for("viewer").get("/").context["checks"]}
    # No worker runs in this test: the dashboard says so instead of failing.
    assert not checks["worker"].ok and "no Celery worker sent a heartbeat" in checks["worker"].detail
    beat({"name": "cpu1@node-a", "seen_at": time.time()})
    beat({"name": "old@node-b", "seen_at": time.time() - 3600})  # stopped long ago: not counted
    try:
        checks = {c.name: c for c in client_for("viewer").get("/").context["checks"]}
        assert checks["worker"].ok and checks["worker"].detail == "1 worker(s): cpu1@node-a"
    finally:
        redis_client().delete(heartbeats_key())


def test_unknown_routes_get_the_styled_404_page(client_for):
    response = client_for("viewer").get("/no/such/page/")
    assert response.status_code == 404
    assert b"Page not found" in response.content and b"/static/css/studio." in response.content  # styled: it links the stylesheet


def test_agent_text_on_pages_is_escaped(client_for):
    Paper.objects.create(slug="xss", title="<script>alert(1)</script>")
    html = client_for("viewer").get("/papers/").content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_lists_are_paginated(client_for):
    Paper.objects.bulk_create([Paper(slug=f"p{i:03}", title=f"Paper {i:03}") for i in range(60)])
    first = client_for("viewer").get("/papers/")
    assert len(first.context["page"].object_list) == 25
    assert b"Page 1 of 3" in first.content
    assert client_for("viewer").get("/papers/?page=3").context["page"].object_list[0].slug == "p050"


@pytest.mark.embedded
def test_healthz_reports_every_service_as_json(client_for):
    response = client_for("viewer").get("/healthz")
    body = response.json()
    assert set(body["checks"]) == {"database", "redis", "worker"}
    assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"]
    # Without a worker the status is degraded and the HTTP status tells monitors.
    assert response.status_code == 503 and body["status"] == "degraded"


@pytest.mark.django_db(transaction=True)
def test_healthz_is_all_green_with_a_worker(client_for, celery_worker):
    response = client_for("viewer").get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
