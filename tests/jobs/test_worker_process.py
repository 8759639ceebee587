"""Real worker processes: a worker killed with SIGKILL mid-job, then a new worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from apps.jobs.models import Job
from apps.jobs.services import launch_job
from tests.jobs.test_jobs import wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.embedded]


def worker_database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def start_worker(name: str, queues: str = "cpu", **env_vars: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": worker_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "KLONG_JOB_HEARTBEAT_GRACE_S": "1",
        **env_vars,
    }
    return subprocess.Popen(
        [os.path.join(sys.prefix, "bin", "celery"), "-A", "worker.celery", "worker", "-Q", queues, "-c", "1",
         "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
        cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_a_job_whose_worker_is_killed_resumes_on_a_new_worker_and_finishes_once(personas):
    from worker.celery import app

    app.control.purge()
    job = launch_job("selftest", {"steps": 40, "delay_s": 0.1}, personas["operator"])
    first = start_worker("first")
    second = None
    try:
        wait_for(lambda: Job.objects.filter(pk=job.pk, step__gte=5).exists(), timeout=60)
        os.killpg(first.pid, signal.SIGKILL)  # the whole worker: main process and pool child
        first.wait(timeout=10)
        assert Job.objects.get(pk=job.pk).state == Job.State.RUNNING
        second = start_worker("second")
        job = wait_for(lambda: Job.objects.filter(pk=job.pk, state__in=Job.FINISHED).first(), timeout=90)
    finally:
        stop(first)
        if second is not None:
            stop(second)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.attempt == 2 and job.worker.startswith("second@")
    # Exactly once: every step's metric point is there, none twice.
    assert list(job.metrics.filter(name="loss").values_list("step", flat=True)) == list(range(1, 41))
    assert job.logs.filter(text__startswith="Resuming after step").count() == 1


def test_a_job_past_its_time_limit_fails_with_that_reason(personas):
    from worker.celery import app

    app.control.purge()
    job = launch_job("selftest", {"steps": 200, "delay_s": 0.05}, personas["operator"], time_limit_s=1)
    worker = start_worker("limits")
    try:
        job = wait_for(lambda: Job.objects.filter(pk=job.pk, state__in=Job.FINISHED).first(), timeout=60)
    finally:
        stop(worker)
    assert job.state == Job.State.FAILED, (job.worker, job.time_limit_s)
    assert job.error == "The job ran past its time limit and was stopped."
    assert 0 < job.step < 200


def test_a_time_limit_that_breaks_a_transactions_rollback_is_still_reported_as_the_time_limit():
    from celery.exceptions import SoftTimeLimitExceeded

    from worker.tasks import raised_during

    def rollback_fails_after_the_limit():
        try:
            raise SoftTimeLimitExceeded()
        except SoftTimeLimitExceeded:
            raise RuntimeError("can't change 'autocommit' now") from None  # as atomic's __exit__ did

    with pytest.raises(RuntimeError) as caught:
        rollback_fails_after_the_limit()
    assert raised_during(caught.value, SoftTimeLimitExceeded)
    assert not raised_during(ValueError("a bug"), SoftTimeLimitExceeded)


def test_a_stale_runner_cannot_overwrite_the_attempt_that_replaced_it(personas):
    from worker.progress import JobLost, Progress, set_state

    job = Job.objects.create(kind="selftest", state=Job.State.RUNNING, attempt=2)
    stale = Progress(job.pk, attempt=1)
    with pytest.raises(JobLost):
        stale.update(0.5, "old runner", force=True)
    assert set_state(job.pk, Job.State.SUCCEEDED, attempt=1) is False
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING and job.message == ""
