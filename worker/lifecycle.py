"""Worker start-up and orphaned jobs: describe this worker (queues, GPUs) and take jobs back from
processes that died (the rule is apps/jobs/services/orphans.py).

Each job records its runner: the worker's name, the boot id of that worker's start and the pid of
the pool process running it. A runner is gone when its pool process died (the worker's main process
sees that at once: ``JobRequest`` in worker/tasks.py), when its worker started again under the same
name (a new boot id), or when its worker stopped sending heartbeats. Redis would hand the task's
message out again only after the visibility timeout (hours, since jobs run for hours), so every
worker looks for orphans when it is ready and then every heartbeat, and queues them again; they
resume from their last checkpoint. A cancel asked of an orphan is done on the spot. A Redis that
restarted without its data lost the tasks of the queued jobs too: they are sent again.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from celery.worker.control import inspect_command
from django.conf import settings
from django.db import close_old_connections
from django.db.models import Q
from django.utils import timezone

from apps.jobs.heartbeats import live_heartbeats, redis_client
from apps.jobs.models import Job
from apps.jobs.services.dispatch import send_job
from apps.jobs.services.orphans import orphan_reason, release_orphan, stale_before

log = logging.getLogger(__name__)
_INFO: dict = {"gpus": None}
# This start of this worker; its pool processes are forked from it and share it.
BOOT_ID = uuid.uuid4().hex[:12]
_stop = threading.Event()


def gpu_names() -> list[str]:
    try:
        # lazy: torch only to name the GPUs: a CPU or judge worker need not load it
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def runner_id(pid: int | None = None) -> str:
    """The process that runs a job, as the job records it: this worker's boot id and a pool pid."""
    return f"{BOOT_ID}:{os.getpid() if pid is None else pid}"


def pool_pids(consumer: Any) -> list[int] | None:
    """The pids of a worker's pool processes (its own pid for the solo and thread pools); None if
    the pool cannot say right now (being restarted), and then no pool process counts as gone."""
    try:
        return [int(pid) for pid in consumer.pool.info.get("processes", [os.getpid()])] or None
    except Exception:
        return None


def requeue_orphans(hostname: str = "", processes: list[int] | None = None) -> list[int]:
    """Take back the jobs of dead runners; returns their ids. Safe to run on every worker at once.

    ``hostname``, ``processes``: the calling worker, which knows its own boot id and pool better
    than its last heartbeat does (a worker started again under its old name finds its old jobs at once).
    """
    stale = stale_before()
    suspects = Q(heartbeat_at__lt=stale)
    if hostname:
        suspects |= Q(worker=hostname)
    candidates = list(Job.objects.filter(suspects, state__in=[Job.State.RUNNING, Job.State.CANCELLING]))
    if not candidates:
        return []
    beats = live_heartbeats()
    if hostname:
        beats[hostname] = {"boot": BOOT_ID, "processes": processes}
    return [job.pk for job in candidates if (why := orphan_reason(job, beats, stale)) and release_orphan(job, why)]


def resend_lost_tasks() -> list[int]:
    """Send the task of every queued job again if Redis lost its queues (restarted without its data).

    A marker key lives as long as Redis keeps its data: the first worker to find it missing sets it
    (SET NX: only one does) and sends again; a job whose task then arrives twice runs once (the claim).
    """
    client = redis_client()
    marker = f"{settings.CACHES['default']['KEY_PREFIX']}:queues-kept-since"
    if not client.set(marker, timezone.now().isoformat(), nx=True):
        return []
    try:
        queued = list(Job.objects.filter(state=Job.State.QUEUED).exclude(queue=""))
        for job in queued:
            send_job(job)
    except Exception:
        client.delete(marker)  # not done: the next look (this worker's or another's) does it again
        raise
    if queued:
        log.warning("Redis had lost its queues: sent the tasks of %s queued jobs again", len(queued))
    return [job.pk for job in queued]


def _watch_orphans(consumer: Any) -> None:
    hostname = consumer.hostname
    first = True
    while not _stop.is_set():
        try:
            resend_lost_tasks()
            requeue_orphans(hostname, pool_pids(consumer))
        except Exception:  # the database or Redis briefly away: look again at the next beat
            log.warning("could not check for orphaned jobs", exc_info=True)
        if first:
            first = False
            _INFO["gpus"] = gpu_names()
        close_old_connections()
        _stop.wait(settings.KLONG_WORKER_HEARTBEAT_S)


@worker_ready.connect
def on_worker_ready(sender, **kwargs) -> None:
    # In a thread: the worker must keep answering control messages (pings) meanwhile.
    _stop.clear()
    threading.Thread(target=_watch_orphans, args=(sender,), daemon=True, name="klong-orphans").start()


@worker_shutdown.connect
def on_worker_shutdown(sender, **kwargs) -> None:
    _stop.set()


@inspect_command()
def klong_info(state) -> dict:
    """What the workers page shows: queues, pool size, GPUs (None while still probing)."""
    consumer = state.consumer
    return {
        "queues": sorted(q.name for q in consumer.task_consumer.queues),
        "concurrency": getattr(consumer.pool, "num_processes", None) or consumer.controller.concurrency,
        "pid": os.getpid(),
        "gpus": _INFO["gpus"],
    }
