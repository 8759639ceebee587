"""Cancelling and retrying jobs."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from apps.core.domain import Conflict
from apps.jobs.models import Job
from apps.jobs.progress import publish, set_state
from apps.jobs.services.dispatch import send_job_on_commit
from apps.jobs.services.orphans import orphaned_because, release_orphan
from apps.jobs.services.pipelines import PIPELINE, advance_pipeline


class JobStateError(Conflict, ValidationError):
    """The job's state refuses this (cancelling a finished job, retrying a running one): a 409.
    A ValidationError too, for the pages that show its message."""


def cancel_job(job: Job) -> Job:
    """Queued jobs stop at once; running ones are asked to stop at their next progress report, and
    one whose worker died (an orphan) is cancelled on the spot.

    A pipeline stops its current stage; the stage's end then ends the pipeline as cancelled.
    """
    if job.kind == PIPELINE:
        current = job.children.exclude(state__in=Job.FINISHED).first()
        if current is not None:
            cancel_job(current)
            current.refresh_from_db()
            if current.state == Job.State.CANCELLED:
                advance_pipeline(current)
        elif not job.is_finished:
            set_state(job.pk, Job.State.CANCELLED, message="cancelled by user")
        job.refresh_from_db()
        return job
    if Job.objects.filter(pk=job.pk, state=Job.State.QUEUED).update(state=Job.State.CANCELLED) == 1:
        set_state(job.pk, Job.State.CANCELLED, message="cancelled before it started")
    elif Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(state=Job.State.CANCELLING) == 1:
        publish(job.pk, {"kind": "state", "state": Job.State.CANCELLING})
    else:
        job.refresh_from_db()
        if job.is_finished:
            raise JobStateError(f"Job {job.pk} has already finished ({job.state}).")
    job.refresh_from_db()
    if job.state == Job.State.CANCELLING and (why := orphaned_because(job)):
        # Nobody is left to stop it at a progress report.
        release_orphan(job, why)
        job.refresh_from_db()
    return job


def retry_job(job: Job, user) -> Job:
    """Run a failed or cancelled job again, from its last checkpoint, keeping its history; also a
    running one whose worker died (an orphan), without waiting for a worker to notice."""
    if job.kind == PIPELINE:
        raise JobStateError("A pipeline is not retried as a whole: launch it again, or retry its failed stage.")
    job.refresh_from_db()
    # Before the transaction: the heartbeats are read from Redis.
    orphan = bool(orphaned_because(job))
    with transaction.atomic():
        if orphan:
            # Conditional on the attempt: a worker releasing the same orphan cannot queue it twice.
            retryable = Job.objects.filter(pk=job.pk, state=job.state, attempt=job.attempt)
        else:
            retryable = Job.objects.filter(pk=job.pk, state__in=[Job.State.FAILED, Job.State.CANCELLED])
        retried = retryable.update(
            state=Job.State.QUEUED, error="", finished_at=None, message=f"retried by {user.get_username()}"
        )
        job.refresh_from_db()
        if not retried:
            running = job.state in (Job.State.RUNNING, Job.State.CANCELLING)
            where = f" on {job.worker}, which is not known to have died" if running and job.worker else ""
            raise JobStateError(
                f"Only failed or cancelled jobs can be retried, or running ones whose worker has died; "
                f"job {job.pk} is {job.state}{where}."
            )
        send_job_on_commit(job)
        transaction.on_commit(lambda: publish(job.pk, {"kind": "state", "state": Job.State.QUEUED}))
    return job

