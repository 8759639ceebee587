"""Celery tasks: thin. They take ids, claim the job row, run its engine, record the outcome.

Celery imports this module in every worker (klong_site/celery_app.py autodiscovers it) once Django
is set up: it also brings the worker's signal handlers (heartbeat, orphan watch, sandbox cleanup).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.worker.request import Request
from django.db import InterfaceError, OperationalError, connection
from django.db.models import F
from django.utils import timezone

import worker.heartbeat  # noqa: F401 (registers the heartbeat's signal handlers)
import worker.sandbox.signals  # noqa: F401 (registers the sandbox cleanup's signal handlers)
from apps.jobs.models import Job, JobMetric
from apps.jobs.progress import JobCancelled, JobLost, Progress, publish, set_state
from apps.jobs.services.dispatch import RUN_JOB, send_job
from apps.jobs.services.orphans import release_orphan
from apps.jobs.services.pipelines import advance_pipeline
from worker.engines import engine_for
from worker.lifecycle import runner_id

log = logging.getLogger(__name__)
T = TypeVar("T")
# The database went away under the job (PostgreSQL restarted, the connection cut): the job is
# queued again and resumes from its checkpoint, at most this many attempts in all.
DATABASE_LOST = (OperationalError, InterfaceError)
MAX_ATTEMPTS_AFTER_DATABASE_LOSS = 3


def with_database(write: Callable[[], T], tries: int = 6, first_pause_s: float = 0.5) -> T:
    """Run ``write``, reconnecting with growing pauses while the database is unreachable."""
    pause = first_pause_s
    for attempt in range(tries):
        try:
            return write()
        except DATABASE_LOST:
            if attempt == tries - 1:
                raise
            # A dead connection stays dead: drop it so the next query opens a new one.
            connection.close()
            time.sleep(pause)
            pause *= 2
    raise AssertionError("unreachable")


def requeue_after_database_loss(job: Job, reason: str) -> bool:
    """Put a job whose database connection died back in the queue, fenced by its attempt."""
    if job.attempt >= MAX_ATTEMPTS_AFTER_DATABASE_LOSS:
        return False
    requeued = Job.objects.filter(pk=job.pk, attempt=job.attempt, state=Job.State.RUNNING).update(
        state=Job.State.QUEUED, message=f"database connection lost ({reason[:200]}); resuming from the last checkpoint",
    )
    if requeued:
        send_job(job)
    return bool(requeued)


def claim(job_id: int, worker: str) -> Job | None:
    """Take a queued job for this worker; None if it is not queued (cancelled, or run elsewhere)."""
    claimed = Job.objects.filter(pk=job_id, state=Job.State.QUEUED).update(
        state=Job.State.RUNNING,
        attempt=F("attempt") + 1,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
        worker=worker,
        runner=runner_id(),
        error="",
        eta_at=None,  # this run's pace is measured afresh
    )
    if claimed != 1:
        return None
    job = Job.objects.get(pk=job_id)
    if job.checkpoint:
        # A resumed run: whatever the dead attempt wrote after its checkpoint is written again.
        done = int(job.checkpoint.get("step", 0))
        JobMetric.objects.filter(job_id=job_id, step__gt=done).delete()
    return job


TIME_LIMIT_ERROR = "The job ran past its time limit and was stopped."


def raised_during(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` or an exception it was raised while handling (its cause or context) is a ``kind``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class JobRequest(Request):
    """A run_job message as the worker's main process sees it.

    When the pool process running the job dies (SIGKILL, out of memory), the job is released from
    it here and queued again, before Celery also puts the message back (``reject_on_worker_lost``):
    whichever delivery comes first claims the job and resumes it from its checkpoint, the other one
    finds it taken and does nothing.
    """

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):  # how the pool hands it over
            exc = exc.exc
        if isinstance(exc, WorkerLostError) and self.worker_pid:
            try:
                release_lost_job(int(self.args[0]), self.worker_pid, str(exc))
            except Exception:  # never in Celery's way; the orphan sweep will find the job
                log.exception("could not release job %s from its dead process", self.args)
        return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


def release_lost_job(job_id: int, pid: int, reason: str) -> str | None:
    """Release ``job_id`` if pool process ``pid`` of this worker was running it (see ``JobRequest``)."""

    def release() -> str | None:
        job = Job.objects.filter(pk=job_id, runner=runner_id(pid)).first()
        if job is None or job.state not in (Job.State.RUNNING, Job.State.CANCELLING):
            return None
        return release_orphan(job, f"its worker process died ({reason})")

    return with_database(release, tries=2)


@shared_task(bind=True, name=RUN_JOB, acks_late=True, reject_on_worker_lost=True, Request=JobRequest)
def run_job(self, job_id: int) -> str:
    job = claim(job_id, self.request.hostname or "")
    if job is None:
        log.info("job %s was not queued any more; skipping", job_id)
        return "skipped"
    publish(job_id, {"kind": "state", "state": Job.State.RUNNING, "attempt": job.attempt, "worker": job.worker})
    progress = Progress(job_id, attempt=job.attempt)
    outcome: tuple[str, dict] = (Job.State.SUCCEEDED, {})
    try:
        result = engine_for(job.kind)(job, progress)
        outcome = (Job.State.SUCCEEDED, {"result": result or {}, "message": "done"})
    except JobLost:
        log.warning("job %s attempt %s lost ownership; stopping without writing", job_id, job.attempt)
        return "lost"
    except JobCancelled:
        outcome = (Job.State.CANCELLED, {"message": "cancelled by user"})
    except Exception as exc:
        if raised_during(exc, SoftTimeLimitExceeded):
            # The limit may strike mid-query: the interrupted transaction's rollback then fails too
            # ("can't change 'autocommit' now") and that error arrives here. The reason is still the
            # limit, and the connection is unusable.
            connection.close()
            outcome = (Job.State.FAILED, {"error": TIME_LIMIT_ERROR})
        elif isinstance(exc, DATABASE_LOST):
            reason = str(exc).strip()
            log.warning("job %s lost its database connection: %s", job_id, reason)
            connection.close()
            if with_database(lambda: requeue_after_database_loss(job, reason)):
                return "requeued"
            outcome = (Job.State.FAILED, {"error": f"Lost the database connection {job.attempt} times; last: {reason}"})
        else:
            log.exception("job %s failed", job_id)
            outcome = (Job.State.FAILED, {"error": f"{type(exc).__name__}: {exc}"})
    with_database(progress.flush)
    state, fields = outcome
    if not with_database(lambda: set_state(job_id, state, attempt=job.attempt, **fields)):
        return "lost"
    if job.parent_id:
        advance_pipeline(Job.objects.select_related("parent").get(pk=job_id))
    return state


@shared_task(name="klong.ping")
def ping(payload: str = "pong") -> str:
    return payload
