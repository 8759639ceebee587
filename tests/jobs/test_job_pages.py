from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from apps.jobs.models import Job
from tests.jobs.test_jobs import wait_for
from tests.support.streaming import streamed

pytestmark = pytest.mark.django_db


def test_the_launch_page_shows_the_kinds_form_with_defaults_and_help(client_for):
    html = client_for("operator").get("/jobs/new/?kind=selftest").content.decode()
    assert 'name="config-steps"' in html and 'value="20"' in html
    assert "Steps to run (1-1000)." in html


def test_launching_from_the_page_queues_the_job_and_opens_it(client_for):
    response = client_for("operator").post(
        "/jobs/new/", {"kind": "selftest", "config-steps": "7", "config-delay_s": "0", "config-echo": "x", "priority": "3"}
    )
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert job.config == {"steps": 7, "delay_s": 0.0, "echo": "x"} and job.priority == 3


def test_a_bad_value_on_the_launch_page_is_a_form_error_and_nothing_is_queued(client_for):
    response = client_for("operator").post(
        "/jobs/new/", {"kind": "selftest", "config-steps": "0", "config-delay_s": "0", "config-echo": "x", "priority": "5"}
    )
    assert response.status_code == 200
    assert b"Ensure this value is greater than or equal to 1." in response.content
    assert not Job.objects.exists()


def test_launch_again_with_changes_prefills_from_an_earlier_job(client_for):
    earlier = Job.objects.create(kind="selftest", config={"steps": 42, "delay_s": 0.5, "echo": "again"}, priority=2)
    html = client_for("operator").get(f"/jobs/new/?from={earlier.pk}").content.decode()
    assert 'value="42"' in html and 'value="again"' in html and "Pre-filled from job" in html


def test_viewers_cannot_open_the_launch_page(client_for):
    assert client_for("viewer").get("/jobs/new/").status_code == 403


def test_the_launch_page_lists_the_kinds_when_none_is_chosen(client_for):
    html = client_for("operator").get("/jobs/new/").content.decode()
    assert "Worker self-test" in html and "?kind=selftest" in html


@pytest.mark.django_db(transaction=True)
def test_a_failed_job_is_retried_from_its_checkpoint(client_for, personas, celery_worker):
    job = Job.objects.create(
        kind="selftest", state=Job.State.FAILED, error="boom", attempt=1, checkpoint={"step": 3},
        config={"steps": 5, "delay_s": 0, "echo": "pong"}, created_by=personas["operator"],
    )
    response = client_for("operator").post(f"/api/jobs/{job.pk}/retry/")
    assert response.status_code == 202
    job = wait_for(lambda: Job.objects.filter(pk=job.pk, state=Job.State.SUCCEEDED).first())
    assert job.attempt == 2 and job.error == ""
    assert list(job.metrics.values_list("step", flat=True)) == [4, 5]


def test_only_failed_or_cancelled_jobs_can_be_retried(client_for):
    job = Job.objects.create(kind="selftest", state=Job.State.RUNNING)
    response = client_for("operator").post(f"/api/jobs/{job.pk}/retry/")
    assert response.status_code == 409
    assert "Only failed or cancelled jobs can be retried" in response.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_the_workers_page_lists_connected_workers_with_queues(client_for, celery_worker):
    html = client_for("viewer").get("/jobs/workers/").content.decode()
    assert celery_worker.hostname in html
    assert "cpu" in html and "judge" in html


def test_the_workers_page_says_when_no_worker_answers(client_for):
    assert b"No worker answered" in client_for("viewer").get("/jobs/workers/").content


def test_the_job_page_shows_eta_and_steps_while_running(client_for):
    from datetime import timedelta

    from django.utils import timezone

    job = Job.objects.create(
        kind="selftest", state=Job.State.RUNNING, progress=0.5, step=10, total_steps=20,
        started_at=timezone.now() - timedelta(seconds=60), eta_at=timezone.now() + timedelta(seconds=610),
    )
    html = client_for("viewer").get(f"/jobs/{job.pk}/").content.decode()
    assert "step 10 of 20" in html and "about 10 min left" in html
    # Before the runner has a pace (a couple of steps), no guess.
    Job.objects.filter(pk=job.pk).update(eta_at=None)
    assert " left" not in client_for("viewer").get(f"/jobs/{job.pk}/").content.decode().split('data-testid="job-eta"')[1][:40]


def test_a_pipeline_page_lists_its_stages(client_for, personas):
    from apps.jobs.services.pipelines import launch_pipeline

    parent = launch_pipeline([{"kind": "selftest"}, {"kind": "selftest"}], personas["operator"], title="Two self-tests")
    html = client_for("viewer").get(f"/jobs/{parent.pk}/").content.decode()
    child = parent.children.get()
    assert "Two self-tests: stage 1" in html and f"/jobs/{child.pk}/" in html
    assert client_for("viewer").get(f"/jobs/{child.pk}/").context["job"].parent == parent


def test_a_pipeline_is_launched_from_the_page(client_for):
    stages = '[{"kind": "selftest", "config": {"steps": 2}}, {"kind": "selftest"}]'
    response = client_for("operator").post("/jobs/pipeline/", {"stages": stages, "priority": "5", "title": "P"})
    parent = Job.objects.get(kind="pipeline")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{parent.pk}/"
    assert parent.total_steps == 2 and parent.children.count() == 1


def test_a_pipeline_with_a_bad_stage_shows_which_one_on_the_page(client_for):
    stages = '[{"kind": "selftest"}, {"kind": "selftest", "config": {"steps": 0}}]'
    response = client_for("operator").post("/jobs/pipeline/", {"stages": stages, "priority": "5"})
    assert response.status_code == 400
    assert b"stage 2.steps: Ensure this value is greater than or equal to 1." in response.content
    assert not Job.objects.exists()


def test_a_queued_job_that_no_running_worker_takes_says_so(client_for, personas):
    import time

    from apps.jobs.heartbeats import heartbeats_key, redis_client
    from worker.heartbeat import beat

    redis_client().delete(heartbeats_key())
    job = Job.objects.create(kind="sft", queue="gpu", created_by=personas["operator"])
    try:
        page = client_for("viewer").get(f"/jobs/{job.pk}/").content.decode()
        assert 'data-testid="unserved-queue"' in page and "launch it again with GPUs = 0" in page
        beat({"name": "gpu1@node", "queues": ["gpu", "judge"], "seen_at": time.time()})
        assert 'data-testid="unserved-queue"' not in client_for("viewer").get(f"/jobs/{job.pk}/").content.decode()
    finally:
        redis_client().delete(heartbeats_key())


def test_a_running_job_whose_worker_went_silent_says_so_and_can_be_retried_from_its_page(client_for):
    job = Job.objects.create(kind="selftest", state=Job.State.RUNNING, attempt=1, worker="gone@node", runner="b:7",
                             heartbeat_at=timezone.now() - timedelta(hours=1), config={"steps": 5})
    client = client_for("operator")
    html = client.get(f"/jobs/{job.pk}/").content.decode()
    assert 'data-testid="orphaned"' in html and "its worker gone@node went silent" in html
    assert f'action="/jobs/{job.pk}/retry/"' in html
    assert client.post(f"/jobs/{job.pk}/retry/").status_code == 302  # the task is sent on commit: not here
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED and job.message == "retried by operator"


def test_a_file_the_job_offers_is_linked_on_its_page_and_streamed(client_for, personas):
    job = Job.objects.create(kind="selftest", state=Job.State.SUCCEEDED)
    path = Path(settings.DATA_DIR) / "exports" / f"job-{job.pk}" / "out.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"zip bytes " * 300_000)
    artifact = job.artifacts.create(name="out.zip", kind="dataset", path=f"exports/job-{job.pk}/out.zip")
    link = f"/jobs/{job.pk}/artifacts/{artifact.pk}/download/"
    assert f'href="{link}"' in client_for("viewer").get(f"/jobs/{job.pk}/").content.decode()
    response = client_for("viewer").get(link)
    # Asynchronous content: daphne sends it a megabyte at a time (a FileResponse it would read whole first).
    assert response.is_async and response["Content-Type"] == "application/zip"
    assert response["Content-Length"] == str(path.stat().st_size) and streamed(response) == path.read_bytes()
    api = APIClient()
    api.force_authenticate(personas["viewer"])
    listed = api.get(f"/api/jobs/{job.pk}/artifacts/").json()
    assert listed[0]["download"] == f"http://testserver/api/jobs/{job.pk}/artifacts/{artifact.pk}/download/"
    assert streamed(api.get(listed[0]["download"])) == path.read_bytes()


def test_only_files_in_the_exports_folder_are_offered_for_download(client_for, personas):
    job = Job.objects.create(kind="selftest", state=Job.State.SUCCEEDED)
    secret = job.artifacts.create(name="key", path="secret_key")
    escape = job.artifacts.create(name="up", path="exports/../secret_key")
    api = APIClient()
    api.force_authenticate(personas["viewer"])
    for artifact in (secret, escape):
        assert client_for("viewer").get(f"/jobs/{job.pk}/artifacts/{artifact.pk}/download/").status_code == 404
        assert api.get(f"/api/jobs/{job.pk}/artifacts/{artifact.pk}/download/").status_code == 404
    other = Job.objects.create(kind="selftest")
    assert client_for("viewer").get(f"/jobs/{other.pk}/artifacts/{secret.pk}/download/").status_code == 404
    assert [a["download"] for a in api.get(f"/api/jobs/{job.pk}/artifacts/").json()] == [None, None]
