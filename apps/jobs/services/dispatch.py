"""A job's task sent to its queue, by name: the web never imports the worker (worker/tasks.py
defines the task under the same name)."""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.db import transaction

from apps.jobs.models import Job

RUN_JOB = "klong.run_job"


def task_options(job: Job) -> dict[str, Any]:
    options: dict[str, Any] = {"queue": job.queue, "priority": job.priority}
    if job.time_limit_s:
        # The hard limit a little later, so the soft one gets to record the reason first.
        options.update(soft_time_limit=job.time_limit_s, time_limit=job.time_limit_s + 30)
    return options


def send_job(job: Job) -> None:
    """Queue the job's task now."""
    current_app.send_task(RUN_JOB, args=(job.pk,), **task_options(job))


def send_job_on_commit(job: Job) -> None:
    """Queue the job's task once the transaction that wrote its row commits, so a worker never
    looks for a row it cannot see yet."""
    transaction.on_commit(lambda: send_job(job))
