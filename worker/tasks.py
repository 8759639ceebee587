"""Celery tasks: thin. They take ids, claim the job row, run its engine, record the outcome."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.utils import timezone

from apps.jobs.models import Job
from worker.engines import engine_for
from worker.progress import JobCancelled, Progress, publish, set_state

log = logging.getLogger(__name__)


@shared_task(bind=True, name="klong.run_job", acks_late=True, task_reject_on_worker_lost=True)
def run_job(self, job_id: int) -> str:
    # Claim with a conditional update: a redelivered message or a cancelled job runs nothing.
    claimed = Job.objects.filter(pk=job_id, state=Job.State.QUEUED).update(
        state=Job.State.RUNNING, started_at=timezone.now(), worker=self.request.hostname or ""
    )
    if claimed != 1:
        log.info("job %s was not queued any more; skipping", job_id)
        return "skipped"
    job = Job.objects.get(pk=job_id)
    publish(job_id, {"kind": "state", "state": Job.State.RUNNING})
    progress = Progress(job_id)
    try:
        result = engine_for(job.kind)(job, progress)
    except JobCancelled:
        set_state(job_id, Job.State.CANCELLED, message="cancelled by user")
        return Job.State.CANCELLED
    except SoftTimeLimitExceeded:
        set_state(job_id, Job.State.FAILED, error="The job ran past its time limit and was stopped.")
        return Job.State.FAILED
    except Exception as exc:
        log.exception("job %s failed", job_id)
        set_state(job_id, Job.State.FAILED, error=f"{type(exc).__name__}: {exc}")
        return Job.State.FAILED
    set_state(job_id, Job.State.SUCCEEDED, result=result or {}, message="done")
    return Job.State.SUCCEEDED


@shared_task(name="klong.ping")
def ping(payload: str = "pong") -> str:
    return payload
