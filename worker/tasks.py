"""Celery tasks: thin. They take ids, claim the job row, run its engine, record the outcome."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db.models import F
from django.utils import timezone

from apps.jobs.models import Job, JobMetric
from worker.engines import engine_for
from worker.progress import JobCancelled, JobLost, Progress, publish, set_state

log = logging.getLogger(__name__)


def claim(job_id: int, worker: str) -> Job | None:
    """Take a queued job for this worker; None if it is not queued (cancelled, or run elsewhere)."""
    claimed = Job.objects.filter(pk=job_id, state=Job.State.QUEUED).update(
        state=Job.State.RUNNING,
        attempt=F("attempt") + 1,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
        worker=worker,
        error="",
    )
    if claimed != 1:
        return None
    job = Job.objects.get(pk=job_id)
    if job.checkpoint:
        # A resumed run: whatever the dead attempt wrote after its checkpoint is written again.
        done = int(job.checkpoint.get("step", 0))
        JobMetric.objects.filter(job_id=job_id, step__gt=done).delete()
    return job


@shared_task(bind=True, name="klong.run_job", acks_late=True, task_reject_on_worker_lost=True)
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
    except SoftTimeLimitExceeded:
        outcome = (Job.State.FAILED, {"error": "The job ran past its time limit and was stopped."})
    except Exception as exc:
        log.exception("job %s failed", job_id)
        outcome = (Job.State.FAILED, {"error": f"{type(exc).__name__}: {exc}"})
    progress.flush()
    state, fields = outcome
    if not set_state(job_id, state, attempt=job.attempt, **fields):
        return "lost"
    if job.parent_id:
        from apps.jobs.services import advance_pipeline

        advance_pipeline(Job.objects.select_related("parent").get(pk=job_id))
    return state


@shared_task(name="klong.ping")
def ping(payload: str = "pong") -> str:
    return payload
