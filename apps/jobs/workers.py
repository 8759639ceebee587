"""What the workers page shows: connected workers, their queues and GPUs, and their current jobs."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

from apps.jobs.models import Job


@dataclass
class WorkerRow:
    name: str
    queues: list[str]
    concurrency: int | None
    gpus: list[str] | None  # None while the worker is still probing
    jobs: list[Job] = field(default_factory=list)


def worker_overview(timeout: float | None = None) -> list[WorkerRow]:
    from worker.celery import app

    replies = app.control.broadcast("klong_info", reply=True, timeout=timeout or settings.KLONG_WORKER_PING_TIMEOUT)
    rows = {}
    for reply in replies or []:
        for name, info in reply.items():
            rows[name] = WorkerRow(name, info.get("queues", []), info.get("concurrency"), info.get("gpus"))
    running = Job.objects.filter(state__in=[Job.State.RUNNING, Job.State.CANCELLING], worker__in=list(rows))
    for job in running:
        rows[job.worker].jobs.append(job)
    return sorted(rows.values(), key=lambda row: row.name)
