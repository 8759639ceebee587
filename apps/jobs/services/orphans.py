"""Jobs whose worker died: how one is recognised and taken back.

Each job records its runner: the worker's name, the boot id of that worker's start and the pid of
the pool process running it. A runner is gone when its pool process died, when its worker started
again under the same name (a new boot id), or when its worker stopped sending heartbeats. Workers
look for orphans (worker/lifecycle.py) and queue them again; Cancel and Retry on a job page act on
an orphan at once. They resume from their last checkpoint.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from apps.jobs.heartbeats import live_heartbeats
from apps.jobs.models import Job, JobLog
from apps.jobs.progress import set_state
from apps.jobs.services.dispatch import send_job
from apps.jobs.services.pipelines import advance_pipeline

log = logging.getLogger(__name__)


def orphan_reason(job: Job, beats: dict[str, dict], stale: datetime) -> str:
    """Why the process that runs ``job`` is known to be gone; "" while it may be alive.

    ``beats``: the fresh worker heartbeats; ``stale``: a job whose last report is older may be an orphan.
    """
    boot, _, pid = job.runner.partition(":")
    beat = beats.get(job.worker)
    if beat is not None and boot and beat.get("boot") not in (None, boot):
        return f"its worker {job.worker} was started again"
    if job.heartbeat_at is None or job.heartbeat_at >= stale:
        return ""  # it reported recently
    if beat is None:
        return f"its worker {job.worker} went silent"
    processes = beat.get("processes")
    if beat.get("boot") == boot and processes and pid.isdigit() and int(pid) not in processes:
        return f"its worker process {pid} on {job.worker} is gone"
    return ""


def stale_before() -> datetime:
    """Jobs whose last report is older than this may be orphans."""
    return timezone.now() - timedelta(seconds=settings.KLONG_JOB_HEARTBEAT_GRACE_S)


def release_orphan(job: Job, reason: str) -> str | None:
    """Take ``job`` from its dead runner: a cancel it was asked for is done, otherwise it is queued
    again to resume from its checkpoint, or failed once it has had KLONG_JOB_MAX_ATTEMPTS.

    Returns the new state, or None if the job had moved on (another worker acted first).
    """
    if job.state == Job.State.CANCELLING:
        state, fields = Job.State.CANCELLED, {"message": f"cancelled ({reason})"[:500]}
    elif job.attempt >= settings.KLONG_JOB_MAX_ATTEMPTS:
        state, fields = Job.State.FAILED, {"error": f"Not resumed again after {job.attempt} attempts: {reason}."}
    else:
        state, fields = Job.State.QUEUED, {"message": f"{reason}; resuming from the last checkpoint"[:500]}
    # Conditional on the attempt and the state: two workers can never both act on it.
    if not Job.objects.filter(pk=job.pk, attempt=job.attempt, state=job.state).update(state=state):
        return None
    log.warning("job %s: %s; now %s", job.pk, reason, state)
    JobLog.objects.create(job_id=job.pk, level="warning", text=f"Attempt {job.attempt} ended: {reason}. Now {state}.")
    set_state(job.pk, state, attempt=job.attempt, **fields)
    if state == Job.State.QUEUED:
        send_job(job)
    elif job.parent_id:
        advance_pipeline(Job.objects.select_related("parent").get(pk=job.pk))  # its pipeline ends too
    return state


def orphaned_because(job: Job) -> str:
    """Why the worker process running ``job`` is known to be gone; "" if it may be alive or Redis is away."""
    if job.state not in (Job.State.RUNNING, Job.State.CANCELLING):
        return ""
    try:
        return orphan_reason(job, live_heartbeats(), stale_before())
    except Exception:  # without the heartbeats nothing is known: the workers' own look decides
        return ""
