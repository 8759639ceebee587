"""Worker start-up and orphaned jobs: describe this worker (queues, GPUs), subscribe a multi-GPU
worker to the queues of the jobs it can take, and take jobs back from processes that died.

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
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery import bootsteps
from celery.signals import worker_ready, worker_shutdown
from celery.worker.control import inspect_command
from django.conf import settings
from django.utils import timezone

if TYPE_CHECKING:
    from apps.jobs.models import Job

log = logging.getLogger(__name__)
_INFO: dict = {"gpus": None}
# This start of this worker; its pool processes are forked from it and share it.
BOOT_ID = uuid.uuid4().hex[:12]
_stop = threading.Event()


def gpu_names() -> list[str]:
    try:
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


def live_beats() -> dict[str, dict]:
    """The fresh worker heartbeats; raises if Redis does not answer (then nobody looks silent)."""
    from apps.jobs.workers import silent_after_s
    from worker.heartbeat import read_heartbeats

    return {name: beat for name, beat in read_heartbeats().items() if beat["age_s"] <= silent_after_s()}


def stale_before() -> datetime:
    """Jobs whose last report is older than this may be orphans."""
    return timezone.now() - timedelta(seconds=settings.KLONG_JOB_HEARTBEAT_GRACE_S)


def release_orphan(job: Job, reason: str) -> str | None:
    """Take ``job`` from its dead runner: a cancel it was asked for is done, otherwise it is queued
    again to resume from its checkpoint, or failed once it has had KLONG_JOB_MAX_ATTEMPTS.

    Returns the new state, or None if the job had moved on (another worker acted first).
    """
    from apps.jobs.models import Job, JobLog
    from apps.jobs.services import task_options
    from worker.progress import set_state
    from worker.tasks import run_job

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
        run_job.apply_async(args=(job.pk,), **task_options(job))
    elif job.parent_id:
        from apps.jobs.services import advance_pipeline

        advance_pipeline(Job.objects.select_related("parent").get(pk=job.pk))  # its pipeline ends too
    return state


def requeue_orphans(hostname: str = "", processes: list[int] | None = None) -> list[int]:
    """Take back the jobs of dead runners; returns their ids. Safe to run on every worker at once.

    ``hostname``, ``processes``: the calling worker, which knows its own boot id and pool better
    than its last heartbeat does (a worker started again under its old name finds its old jobs at once).
    """
    from django.db.models import Q

    from apps.jobs.models import Job

    stale = stale_before()
    suspects = Q(heartbeat_at__lt=stale)
    if hostname:
        suspects |= Q(worker=hostname)
    candidates = list(Job.objects.filter(suspects, state__in=[Job.State.RUNNING, Job.State.CANCELLING]))
    if not candidates:
        return []
    beats = live_beats()
    if hostname:
        beats[hostname] = {"boot": BOOT_ID, "processes": processes}
    return [job.pk for job in candidates if (why := orphan_reason(job, beats, stale)) and release_orphan(job, why)]


def resend_lost_tasks() -> list[int]:
    """Send the task of every queued job again if Redis lost its queues (restarted without its data).

    A marker key lives as long as Redis keeps its data: the first worker to find it missing sets it
    (SET NX: only one does) and sends again; a job whose task then arrives twice runs once (the claim).
    """
    from apps.jobs.models import Job
    from apps.jobs.services import task_options
    from worker.heartbeat import redis_client
    from worker.tasks import run_job

    client = redis_client()
    marker = f"{settings.CACHES['default']['KEY_PREFIX']}:queues-kept-since"
    if not client.set(marker, timezone.now().isoformat(), nx=True):
        return []
    try:
        queued = list(Job.objects.filter(state=Job.State.QUEUED).exclude(queue=""))
        for job in queued:
            run_job.apply_async(args=(job.pk,), **task_options(job))
    except Exception:
        client.delete(marker)  # not done: the next look (this worker's or another's) does it again
        raise
    if queued:
        log.warning("Redis had lost its queues: sent the tasks of %s queued jobs again", len(queued))
    return [job.pk for job in queued]


def _watch_orphans(consumer: Any) -> None:
    from django.db import close_old_connections

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


class GPUQueues(bootsteps.Step):
    """A worker on the gpu queue with KLONG_WORKER_GPUS = N also consumes gpu-2 ... gpu-N.

    A worker bootstep, because its __init__ runs after ``-Q`` has chosen the queues and before the
    consumer subscribes (a ``celeryd_after_setup`` handler runs before ``-Q`` and is overwritten).
    """

    def __init__(self, worker, **kwargs) -> None:
        from worker.queues import gpu_queues_for_worker

        queues = worker.app.amqp.queues
        if "gpu" in queues.consume_from:
            for name in gpu_queues_for_worker(settings.KLONG_WORKER_GPUS)[1:]:
                queues.select_add(queues[name])
        super().__init__(worker, **kwargs)


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
