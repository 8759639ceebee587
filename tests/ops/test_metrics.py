"""/metrics: what Prometheus scrapes (jobs, queue depths in Redis, workers and sandboxes from their
heartbeats, judge calls, cost and latency), and who may scrape it."""

from __future__ import annotations

import re
import time

import pytest

from apps.jobs.models import Job
from apps.judging.models import JudgeRun, LeafGrade
from tests.judging.helpers import make_paper_with_rubric
from worker.heartbeat import beat, forget

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def scraper_address(settings):
    """The test client's address (127.0.0.1) is the scraper's."""
    settings.KLONG_METRICS_ALLOW = ["127.0.0.1/32"]


def scrape(client, **headers) -> str:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return response.content.decode()


def value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match, f"{series} not in the scrape"
    return float(match.group(1))


def test_jobs_are_counted_by_state_kind_and_queue(client):
    for state in ["queued", "queued", "running", "failed"]:
        Job.objects.create(kind="selftest", queue="cpu", state=state)
    Job.objects.create(kind="sft", queue="gpu", state="queued")
    text = scrape(client)
    assert value(text, 'klong_jobs{kind="selftest",queue="cpu",state="queued"}') == 2
    assert value(text, 'klong_jobs{kind="selftest",queue="cpu",state="running"}') == 1
    assert value(text, 'klong_jobs{kind="sft",queue="gpu",state="queued"}') == 1


def test_queue_depth_counts_waiting_tasks_of_every_priority(client):
    from klong_site.celery_app import app
    from worker.tasks import ping

    app.control.purge()
    try:
        # Nothing consumes the gpu queue in the tests: the messages wait in Redis.
        for priority in (0, 4, 9):
            ping.apply_async(args=("x",), queue="gpu", priority=priority)
        assert value(scrape(client), 'klong_queue_depth{queue="gpu"}') == 3
    finally:
        app.control.purge()


def test_workers_and_sandboxes_come_from_fresh_heartbeats_only(client):
    fresh = {"name": "gpu7@node-a", "node": "node-a", "queues": ["gpu"], "docker_host": "tcp://sandbox-1:2376",
             "sandboxes": 3, "running_jobs": 1, "seen_at": time.time()}
    same_host = {**fresh, "name": "cpu3@node-a", "queues": ["cpu"]}
    other_host = {**fresh, "name": "cpu4@node-c", "queues": ["cpu"], "docker_host": "tcp://sandbox-2:2376", "sandboxes": 2}
    stale = {**fresh, "name": "gpu8@node-b", "node": "node-b", "sandboxes": 5, "seen_at": time.time() - 600}
    beats = [fresh, same_host, other_host, stale]
    for info in beats:
        beat(info)
    try:
        text = scrape(client)
    finally:
        for info in beats:
            forget(info["name"])
    assert value(text, 'klong_workers{queue="gpu"}') == 1 and value(text, 'klong_workers{queue="cpu"}') == 2
    # Two workers on one Docker host report its count once.
    assert value(text, 'klong_sandboxes{docker_host="tcp://sandbox-1:2376"}') == 3
    assert value(text, "klong_sandboxes_total") == 5
    assert value(text, 'klong_worker_heartbeat_age_seconds{node="node-b",worker="gpu8@node-b"}') >= 600
    assert value(text, 'klong_scrape_error{part="redis"}') == 0


def test_a_heartbeat_counts_the_sandboxes_holding_slots_on_the_workers_docker_host(settings, monkeypatch):
    import uuid

    from worker.heartbeat import sandbox_count
    from worker.sandbox.limits import default_slots

    settings.KLONG_SANDBOXES_PER_HOST = 4
    host = f"tcp://sandbox-{uuid.uuid4().hex[:8]}:2375"  # unique: the slots live in a shared Redis
    monkeypatch.setenv("DOCKER_HOST", host)
    slots = default_slots()
    leases = [slots.acquire(host, hold_s=60, timeout_s=1) for _ in range(3)]
    try:
        assert sandbox_count() == 3
        leases.pop().release()
        assert sandbox_count() == 2
    finally:
        for lease in leases:
            lease.release()


def test_judge_calls_cost_and_leaf_latency(client):
    paper, version = make_paper_with_rubric("bam")
    run = JudgeRun.objects.create(paper=paper, rubric_version=version, rubric_hash=version.content_hash,
                                  judge_name="stub", calls=7, cost_usd=0.25, prompt_tokens=1000, duration_s=4.0)
    for index, latency in enumerate([0.3, 0.9, 1.5, 45.0]):
        LeafGrade.objects.create(run=run, node_index=index, node_id=f"n{index}", latency_s=latency)
    JudgeRun.objects.create(paper=paper, rubric_version=version, rubric_hash=version.content_hash,
                            judge_name="a human", kind=JudgeRun.Kind.HUMAN, calls=99)
    text = scrape(client)
    assert value(text, "klong_judge_calls_total") == 7
    assert value(text, "klong_judge_cost_usd_total") == 0.25
    assert value(text, 'klong_judge_leaf_latency_seconds_bucket{le="1.0"}') == 2
    assert value(text, 'klong_judge_leaf_latency_seconds_bucket{le="60.0"}') == 4
    assert value(text, "klong_judge_leaf_latency_seconds_count") == 4
    assert value(text, "klong_judge_leaf_latency_seconds_sum") == pytest.approx(47.7)


def test_metrics_are_refused_to_everyone_until_a_token_or_an_address_is_configured(client, admin_client, settings):
    settings.KLONG_METRICS_ALLOW = []
    assert client.get("/metrics").status_code == 403
    assert client.post("/metrics").status_code == 403
    # A session is not a way in either: Prometheus has none, and a browser should not need it.
    assert admin_client.get("/metrics").status_code == 403


def test_metrics_need_an_allowlisted_address_or_the_token(client, settings):
    settings.KLONG_METRICS_ALLOW = ["10.1.0.0/16"]
    settings.KLONG_METRICS_TOKEN = "s3cret-token-for-prometheus"
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.2.0.9").status_code == 403
    # A client cannot talk its way in with a forwarded-for header.
    assert client.get("/metrics", REMOTE_ADDR="10.2.0.9", HTTP_X_FORWARDED_FOR="10.1.0.5").status_code == 403
    scrape(client, REMOTE_ADDR="10.1.4.2")
    scrape(client, REMOTE_ADDR="10.2.0.9", HTTP_AUTHORIZATION="Bearer s3cret-token-for-prometheus")
    # A wrong token is refused even from an allowlisted address.
    wrong = client.get("/metrics", REMOTE_ADDR="10.1.4.2", HTTP_AUTHORIZATION="Bearer guess")
    assert wrong.status_code == 403 and b"KLONG_METRICS_TOKEN" in wrong.content
