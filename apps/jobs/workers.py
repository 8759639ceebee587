"""What the workers page shows: every worker on every machine, its queues, GPUs, Docker host and
sandboxes, its current jobs, and the ones that stopped sending heartbeats."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from celery import current_app
from django.conf import settings

from apps.jobs.heartbeats import live_heartbeats, read_heartbeats, silent_after_s
from apps.jobs.models import Job

log = logging.getLogger(__name__)


@dataclass
class WorkerRow:
    name: str
    queues: list[str]
    concurrency: int | None
    gpus: list[str] | None  # None while the worker is still probing
    jobs: list[Job] = field(default_factory=list)
    node: str = ""
    docker_host: str = ""
    sandboxes: int | None = None
    heartbeat_age_s: float | None = None
    answered: bool = True  # answered the broadcast just now

    @property
    def silent(self) -> bool:
        if self.answered:
            return False
        return self.heartbeat_age_s is None or self.heartbeat_age_s > silent_after_s()


def _heartbeats() -> dict[str, dict]:
    try:
        return read_heartbeats()
    except Exception:  # Redis away: the broadcast below fails the same way and the page says so
        log.warning("could not read worker heartbeats", exc_info=True)
        return {}


def queues_with_live_workers() -> set[str]:
    """Queues some worker with a fresh heartbeat consumes: one Redis read, where a ping broadcast
    waits out its timeout for replies (the dashboard and job pages use this)."""
    try:
        beats = live_heartbeats()
    except Exception:  # Redis away: no queue is known to be served
        log.warning("could not read worker heartbeats", exc_info=True)
        return set()
    return {queue for beat in beats.values() for queue in beat.get("queues", [])}


def worker_overview(timeout: float | None = None) -> list[WorkerRow]:
    """Workers that answer now, plus workers known only from their heartbeat (busy or gone)."""
    replies = current_app.control.broadcast("klong_info", reply=True, timeout=timeout or settings.KLONG_WORKER_PING_TIMEOUT)
    rows = {}
    for reply in replies or []:
        for name, info in reply.items():
            rows[name] = WorkerRow(name, info.get("queues", []), info.get("concurrency"), info.get("gpus"))
    for name, beat in _heartbeats().items():
        row = rows.get(name)
        if row is None:
            row = rows[name] = WorkerRow(name, beat.get("queues", []), beat.get("concurrency"), beat.get("gpus"),
                                         answered=False)
        row.node = beat.get("node", "")
        row.docker_host = beat.get("docker_host", "")
        row.sandboxes = beat.get("sandboxes")
        row.heartbeat_age_s = beat["age_s"]
    running = Job.objects.filter(state__in=[Job.State.RUNNING, Job.State.CANCELLING], worker__in=list(rows))
    for job in running:
        rows[job.worker].jobs.append(job)
    return sorted(rows.values(), key=lambda row: row.name)
