"""Real worker processes: a pool process or a whole worker killed with SIGKILL mid-job, cancel and
retry of the orphans, the worker started again under its old name; time limits; stale runners."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.jobs.models import Job
from apps.jobs.services.control import cancel_job, retry_job
from apps.jobs.services.launching import launch_job
from tests.jobs.test_jobs import wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.embedded]


def worker_database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def start_worker(name: str, queues: str = "cpu", concurrency: int = 1, **env_vars: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": worker_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        # Orphans are found within seconds: a heartbeat (and a look for orphans) every second.
        "KLONG_JOB_HEARTBEAT_GRACE_S": "1",
        "KLONG_WORKER_HEARTBEAT_S": "1",
        **env_vars,
    }
    return subprocess.Popen(
        [os.path.join(sys.prefix, "bin", "celery"), "-A", "klong_site.celery_app", "worker", "-Q", queues, "-c", str(concurrency),
         "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
        cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def finished(job: Job, timeout: float = 90) -> Job:
    return wait_for(lambda: Job.objects.filter(pk=job.pk, state__in=Job.FINISHED).first(), timeout=timeout)


def assert_ran_once(job: Job, steps: int, attempts: int) -> None:
    """Succeeded after ``attempts`` claims, every step's metric point there once, resumed once per loss."""
    assert job.state == Job.State.SUCCEEDED, (job.state, job.error, job.message)
    assert job.attempt == attempts
    assert list(job.metrics.filter(name="loss").values_list("step", flat=True)) == list(range(1, steps + 1))
    assert job.logs.filter(text__startswith="Resuming after step").count() == attempts - 1


def test_a_job_whose_pool_process_is_killed_resumes_in_the_same_worker_and_finishes_once(personas):
    from klong_site.celery_app import app

    app.control.purge()
    job = launch_job("selftest", {"steps": 30, "delay_s": 0.1}, personas["operator"])
    worker = start_worker("pool")
    try:
        wait_for(lambda: Job.objects.filter(pk=job.pk, step__gte=5).exists(), timeout=60)
        (pool_process,) = psutil.Process(worker.pid).children()
        pool_process.kill()  # the main process lives on and sees its pool process die
        job = finished(job, timeout=60)
    finally:
        stop(worker)
        forget_worker("pool")
    assert_ran_once(job, 30, attempts=2)
    assert job.worker.startswith("pool@")
    # Its worker saw the pool process die and queued the job again at once.
    assert job.logs.filter(text__startswith="Attempt 1 ended: its worker process died (Worker exited prematurely: "
                                            "signal 9 (SIGKILL)").count() == 1


def test_a_killed_worker_started_again_under_its_name_resumes_its_job_and_orphans_can_be_cancelled_or_retried(
    personas, settings
):
    from apps.jobs.heartbeats import read_heartbeats
    from klong_site.celery_app import app

    # This process (the web side) sees a killed worker as silent after 3 missed one-second beats.
    settings.KLONG_WORKER_HEARTBEAT_S = 1
    settings.KLONG_JOB_HEARTBEAT_GRACE_S = 1
    app.control.purge()
    resumed, cancelled, retried = (
        launch_job("selftest", {"steps": 30, "delay_s": 0.1}, personas["operator"]) for _ in range(3)
    )
    worker = start_worker("same", concurrency=3)
    try:
        wait_for(lambda: Job.objects.filter(state=Job.State.RUNNING, step__gte=3).count() == 3, timeout=60)
        os.killpg(worker.pid, signal.SIGKILL)  # the whole worker: main process and pool processes
        worker.wait(timeout=10)
        name = f"same@{socket.gethostname()}"
        wait_for(lambda: read_heartbeats().get(name, {"age_s": 0})["age_s"] > 3, timeout=30)
        # Nobody is left to stop it at a progress report: the cancel is done on the spot.
        assert cancel_job(cancelled).state == Job.State.CANCELLED
        assert retry_job(Job.objects.get(pk=retried.pk), personas["operator"]).state == Job.State.QUEUED
        assert Job.objects.get(pk=resumed.pk).state == Job.State.RUNNING
        # `make run` starts its worker under the same name every time.
        worker = start_worker("same", concurrency=3)
        resumed, retried = finished(resumed), finished(retried)
    finally:
        stop(worker)
        forget_worker("same")
    assert_ran_once(resumed, 30, attempts=2)
    assert resumed.logs.filter(text=f"Attempt 1 ended: its worker same@{socket.gethostname()} was started again. "
                                    "Now queued.").count() == 1
    assert_ran_once(retried, 30, attempts=2)
    cancelled.refresh_from_db()
    assert cancelled.state == Job.State.CANCELLED
    assert cancelled.message == f"cancelled (its worker same@{socket.gethostname()} went silent)"
    assert cancelled.finished_at is not None


def forget_worker(name: str) -> None:
    """A killed worker could not take its heartbeat back: other tests count the workers they see."""
    from worker.heartbeat import forget

    forget(f"{name}@{socket.gethostname()}")


def test_a_job_past_its_time_limit_fails_with_that_reason(personas):
    from klong_site.celery_app import app

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
    from apps.jobs.progress import JobLost, Progress, set_state

    job = Job.objects.create(kind="selftest", state=Job.State.RUNNING, attempt=2)
    stale = Progress(job.pk, attempt=1)
    with pytest.raises(JobLost):
        stale.update(0.5, "old runner", force=True)
    assert set_state(job.pk, Job.State.SUCCEEDED, attempt=1) is False
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING and job.message == ""


def _running(runner: str, reported_s_ago: float, worker: str = "w@node") -> Job:
    return Job(kind="selftest", state=Job.State.RUNNING, worker=worker, runner=runner,
               heartbeat_at=timezone.now() - timedelta(seconds=reported_s_ago))


@pytest.mark.parametrize(("beats", "runner", "reported_s_ago", "orphan"), [
    pytest.param({"w@node": {"boot": "new", "processes": [7]}}, "old:7", 0, True, id="worker-restarted-under-its-name"),
    pytest.param({}, "b:7", 300, True, id="worker-silent"),
    pytest.param({}, "b:7", 5, False, id="worker-silent-but-the-job-reported-recently"),
    pytest.param({"w@node": {"boot": "b", "processes": [7, 8]}}, "b:7", 300, False, id="alive-but-slow"),
    pytest.param({"w@node": {"boot": "b", "processes": [8, 9]}}, "b:7", 300, True, id="pool-process-gone"),
])
def test_a_job_is_an_orphan_only_once_its_runner_is_known_to_be_gone(beats, runner, reported_s_ago, orphan):
    from apps.jobs.services.orphans import orphan_reason

    stale = timezone.now() - timedelta(seconds=120)
    assert bool(orphan_reason(_running(runner, reported_s_ago), beats, stale)) is orphan


def test_orphans_are_queued_again_cancelled_or_failed_after_too_many_attempts_ending_their_pipeline(settings):
    from klong_site.celery_app import app
    from worker.lifecycle import requeue_orphans

    settings.KLONG_JOB_MAX_ATTEMPTS = 3
    gone = {"worker": "gone@node", "runner": "b:7", "heartbeat_at": timezone.now() - timedelta(hours=1)}
    requeued = Job.objects.create(kind="selftest", state=Job.State.RUNNING, attempt=1, **gone)
    cancelled = Job.objects.create(kind="selftest", state=Job.State.CANCELLING, attempt=1, **gone)
    pipeline = Job.objects.create(kind="pipeline", state=Job.State.RUNNING, queue="", config={"stages": [{}, {}]})
    failed = Job.objects.create(kind="selftest", state=Job.State.RUNNING, attempt=3, parent=pipeline, **gone)
    try:
        assert sorted(requeue_orphans()) == sorted([requeued.pk, cancelled.pk, failed.pk])
        assert requeue_orphans() == []  # once
    finally:
        app.control.purge()
    states = dict(Job.objects.values_list("pk", "state"))
    assert states == {requeued.pk: Job.State.QUEUED, cancelled.pk: Job.State.CANCELLED, failed.pk: Job.State.FAILED,
                      pipeline.pk: Job.State.FAILED}  # a failed stage ends its pipeline
    failed.refresh_from_db()
    assert failed.error == "Not resumed again after 3 attempts: its worker gone@node went silent."
