from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from apps.jobs.models import Job
from worker.engines import KINDS
from worker.progress import publish, set_state


@transaction.atomic
def launch_job(kind: str, config: dict[str, Any], user, *, title: str = "", priority: int = 5) -> Job:
    """Create the job row and queue its task once the row is committed."""
    from worker.tasks import run_job

    if kind not in KINDS:
        raise ValidationError({"kind": f"Unknown job kind {kind!r}; known: {', '.join(sorted(KINDS))}."})
    if not isinstance(config, dict):
        raise ValidationError({"config": "config must be a JSON object."})
    if not 0 <= priority <= 9:
        raise ValidationError({"priority": "priority must be between 0 (first) and 9 (last)."})
    spec = KINDS[kind]
    job = Job.objects.create(
        kind=kind,
        title=title or spec.label,
        config=config,
        queue=spec.queue,
        priority=priority,
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    run_job.apply_async_on_commit(args=(job.pk,), queue=spec.queue, priority=priority)
    return job


def cancel_job(job: Job) -> Job:
    """Queued jobs stop at once; running ones are asked to stop at their next progress report."""
    if Job.objects.filter(pk=job.pk, state=Job.State.QUEUED).update(state=Job.State.CANCELLED) == 1:
        set_state(job.pk, Job.State.CANCELLED, message="cancelled before it started")
    elif Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(state=Job.State.CANCELLING) == 1:
        publish(job.pk, {"kind": "state", "state": Job.State.CANCELLING})
    else:
        job.refresh_from_db()
        if job.is_finished:
            raise ValidationError(f"Job {job.pk} has already finished ({job.state}).")
    job.refresh_from_db()
    return job
