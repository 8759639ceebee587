"""Job progress: the database first (the source of truth), then events to the job's watchers.

Bursts are coalesced: metric points and log lines are buffered and sent together at most every
``min_interval_s``, as one ``batch`` event that keeps their order. State changes and the final
snapshot are always written and sent at once, so the last thing a page sees is exact.

Every write of a runner is fenced by the job's ``attempt``: if the job was re-queued because its
worker looked dead, the old runner's writes match no row and it stops (``JobLost``).

Metric points and log lines are telemetry, written with an asynchronous commit: the commit does
not wait for the disk (a power loss may drop the last fraction of a second of them, never corrupts
anything). A durable commit per point bounded a job to the disk's flushes per second (~270 on a
busy disk); state, progress, checkpoints and results stay durable.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from asgiref.sync import async_to_sync
from celery.exceptions import SoftTimeLimitExceeded
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.jobs.eta import Pace
from apps.jobs.models import Job, JobArtifact, JobLog, JobMetric

log = logging.getLogger(__name__)

JOBS_GROUP = "jobs"
# Metric points and log lines closer together than this travel as one batch event.
COALESCE_S = 0.05


@contextmanager
def telemetry_commit() -> Iterator[None]:
    """The writes inside commit without waiting for the disk (PostgreSQL's ``synchronous_commit =
    off`` for this transaction, SQLite's ``synchronous = NORMAL`` in WAL mode): still atomic and
    consistent, only not durable against a power loss until the next durable commit."""
    if connection.in_atomic_block:  # inside the caller's transaction: its commit decides
        yield
        return
    if connection.vendor == "sqlite":
        # SQLite refuses to change it inside a transaction: around it, then back.
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous")
            durable = cursor.fetchone()[0]
            cursor.execute("PRAGMA synchronous = NORMAL")
        try:
            with transaction.atomic():
                yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"PRAGMA synchronous = {int(durable)}")
        return
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield


class JobCancelled(Exception):
    """Raised inside an engine when the user asked to cancel its job."""


class JobLost(Exception):
    """This runner no longer owns the job (it was re-queued and claimed by another attempt)."""


def job_group(job_id: int) -> str:
    return f"job-{job_id}"


def publish(job_id: int, event: dict[str, Any], *, to_list: bool = True) -> None:
    """Send one event to the job's watchers (and the jobs list). Never fails the job."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "job.event", "event": {"job": job_id, "sent_at": time.time(), **event}}

    async def send() -> None:
        # One event loop for both sends: each async_to_sync call costs a loop and a connection.
        await layer.group_send(job_group(job_id), message)
        if to_list:
            await layer.group_send(JOBS_GROUP, message)

    try:
        async_to_sync(send)()
    except SoftTimeLimitExceeded:
        raise  # the job's time is up: that must reach the task, not be taken for a lost update
    except Exception:  # a dropped live update is fine: pages re-read the row on reconnect
        log.warning("could not publish an event for job %s", job_id, exc_info=True)


def job_snapshot(job: Job) -> dict[str, Any]:
    return {
        "kind": "snapshot",
        "id": job.pk,
        "state": job.state,
        "progress": job.progress,
        "step": job.step,
        "total_steps": job.total_steps,
        "stage": job.stage,
        "message": job.message,
        "error": job.error,
        "result": job.result,
        "worker": job.worker,
        "attempt": job.attempt,
        "eta_s": job.eta_s,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


class Progress:
    """Handed to an engine: report progress, metrics, logs and checkpoints; check for cancel."""

    def __init__(self, job_id: int, attempt: int | None = None, min_interval_s: float = 0.25) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.min_interval_s = min_interval_s
        self._last_update = 0.0
        self._last_flush = 0.0
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._pace = Pace()

    def _rows(self):
        rows = Job.objects.filter(pk=self.job_id)
        return rows if self.attempt is None else rows.filter(attempt=self.attempt)

    def _write(self, **fields: Any) -> None:
        if self._rows().update(heartbeat_at=timezone.now(), **fields) == 0:
            raise JobLost(f"job {self.job_id} is no longer run by attempt {self.attempt}")

    def _emit(self, event: dict[str, Any]) -> None:
        """Send at once after a quiet spell; inside a burst, gather for COALESCE_S then send."""
        with self._lock:
            self._pending.append(event)
            quiet = time.monotonic() - self._last_flush >= COALESCE_S
            if not quiet and self._timer is None:
                self._timer = threading.Timer(COALESCE_S, self.flush)
                self._timer.daemon = True
                self._timer.start()
        if quiet:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            events, self._pending = self._pending, []
            if not events:
                return
            self._last_flush = time.monotonic()
            # Sent under the lock so two flushes can never reorder their events.
            publish(self.job_id, events[0] if len(events) == 1 else {"kind": "batch", "events": events}, to_list=False)

    def set_total(self, total_steps: int, stage: str = "") -> None:
        self._write(total_steps=total_steps, stage=stage[:100])

    def update(self, fraction: float, message: str = "", *, step: int | None = None, force: bool = False) -> None:
        now = time.monotonic()
        fraction = min(max(float(fraction), 0.0), 1.0)
        self._pace.report(now, fraction)  # every report sets the pace, written or not
        if not force and now - self._last_update < self.min_interval_s:
            return
        self._last_update = now
        left = self._pace.seconds_left(now)
        fields: dict[str, Any] = {"progress": fraction, "message": message[:500],
                                  "eta_at": None if left is None else timezone.now() + timedelta(seconds=left)}
        if step is not None:
            fields["step"] = step
        self._write(**fields)
        self.flush()
        publish(self.job_id, {"kind": "progress", "progress": fraction, "message": message[:500], "step": step,
                              "eta_s": left})
        self.check_cancelled()

    def metric(self, step: int, **values: float) -> None:
        with telemetry_commit():
            JobMetric.objects.bulk_create(
                [JobMetric(job_id=self.job_id, step=step, name=name, value=float(v)) for name, v in values.items()]
            )
        self._emit({"kind": "metric", "step": step, "values": {k: float(v) for k, v in values.items()}})

    def log(self, text: str, level: str = "info") -> None:
        with telemetry_commit():
            JobLog.objects.create(job_id=self.job_id, level=level, text=text)
        self._emit({"kind": "log", "level": level, "text": text})

    def artifact(self, name: str, path: str, kind: str = "other", **meta: Any) -> None:
        """Record a file the job produced (path relative to the data folder) and tell watchers."""


        full = settings.DATA_DIR / path
        size = _size(full)
        JobArtifact.objects.create(job_id=self.job_id, name=name, kind=kind, path=path, size_bytes=size, meta=meta)
        self._emit({"kind": "artifact", "name": name, "path": path, "artifact_kind": kind, "size_bytes": size})

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Record what a resumed run starts from (by convention ``{"step": n, ...}``)."""
        self._write(checkpoint=state)

    def check_cancelled(self) -> None:
        if Job.objects.filter(pk=self.job_id, state=Job.State.CANCELLING).exists():
            raise JobCancelled()


def _size(path: Any) -> int:
    """Bytes of a file, or of the files under a folder (a checkpoint is a folder); links are not
    followed, so a link out of the data folder counts nothing."""
    if path.is_symlink():
        return 0
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, files in os.walk(path):  # does not descend into linked folders
        for name in files:
            info = os.lstat(os.path.join(folder, name))
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def set_state(job_id: int, state: str, *, attempt: int | None = None, **fields: Any) -> bool:
    """Write a running or final state, then tell watchers with a full snapshot.

    With ``attempt`` the write only lands if that attempt still owns the job; returns whether it did.
    """
    if state in Job.FINISHED:
        fields.setdefault("finished_at", timezone.now())
        fields.setdefault("eta_at", None)
    if state == Job.State.SUCCEEDED:
        fields.setdefault("progress", 1.0)
    rows = Job.objects.filter(pk=job_id)
    if attempt is not None:
        rows = rows.filter(attempt=attempt)
    if rows.update(state=state, **fields) == 0:
        return False
    publish(job_id, job_snapshot(Job.objects.get(pk=job_id)))
    return True


__all__ = ["JobCancelled", "JobLost", "Progress", "job_group", "job_snapshot", "publish", "set_state"]
