"""Job progress: the database first (the source of truth), then one event to the job's group.

Bursts are throttled: a training loop may report every step, the browser needs a few updates a
second. Final states are always written and sent.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

from apps.jobs.models import Job, JobLog, JobMetric

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside an engine when the user asked to cancel its job."""


def job_group(job_id: int) -> str:
    return f"job-{job_id}"


JOBS_GROUP = "jobs"


def publish(job_id: int, event: dict[str, Any]) -> None:
    """Send one event to the job's watchers and to the jobs list. Never fails the job."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "job.event", "event": {"job": job_id, **event}}

    async def send_both() -> None:
        # One event loop for both sends: each async_to_sync call costs a loop and a connection.
        await layer.group_send(job_group(job_id), message)
        await layer.group_send(JOBS_GROUP, message)

    try:
        async_to_sync(send_both)()
    except Exception:  # a dropped live update is fine: pages re-read the row on reconnect
        log.warning("could not publish an event for job %s", job_id, exc_info=True)


def job_snapshot(job: Job) -> dict[str, Any]:
    return {
        "kind": "snapshot",
        "id": job.pk,
        "state": job.state,
        "progress": job.progress,
        "message": job.message,
        "error": job.error,
        "result": job.result,
        "worker": job.worker,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


class Progress:
    """Handed to an engine: report progress, metrics and log lines; check for cancellation."""

    def __init__(self, job_id: int, min_interval_s: float = 0.25) -> None:
        self.job_id = job_id
        self.min_interval_s = min_interval_s
        self._last_sent = 0.0

    def update(self, fraction: float, message: str = "", *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_sent < self.min_interval_s:
            return
        self._last_sent = now
        fraction = min(max(float(fraction), 0.0), 1.0)
        Job.objects.filter(pk=self.job_id).update(progress=fraction, message=message[:500])
        publish(self.job_id, {"kind": "progress", "progress": fraction, "message": message[:500]})
        self.check_cancelled()

    def metric(self, step: int, **values: float) -> None:
        JobMetric.objects.bulk_create(
            [JobMetric(job_id=self.job_id, step=step, name=name, value=float(v)) for name, v in values.items()]
        )
        publish(self.job_id, {"kind": "metric", "step": step, "values": {k: float(v) for k, v in values.items()}})

    def log(self, text: str, level: str = "info") -> None:
        JobLog.objects.create(job_id=self.job_id, level=level, text=text)
        publish(self.job_id, {"kind": "log", "level": level, "text": text})

    def check_cancelled(self) -> None:
        if Job.objects.filter(pk=self.job_id, state=Job.State.CANCELLING).exists():
            raise JobCancelled()


def set_state(job_id: int, state: str, **fields: Any) -> None:
    """Write a terminal or running state, then tell watchers with a full snapshot."""
    if state in Job.FINISHED:
        fields.setdefault("finished_at", timezone.now())
    if state == Job.State.SUCCEEDED:
        fields.setdefault("progress", 1.0)
    Job.objects.filter(pk=job_id).update(state=state, **fields)
    job = Job.objects.get(pk=job_id)
    publish(job_id, job_snapshot(job))


__all__ = ["JobCancelled", "Progress", "job_group", "job_snapshot", "publish", "set_state"]
