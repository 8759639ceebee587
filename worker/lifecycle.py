"""Worker start-up: re-queue jobs whose worker died, describe this worker (queues, GPUs), and
subscribe a multi-GPU worker to the queues of the jobs it can take.

A worker killed with SIGKILL never acknowledges its task, but Redis only hands such a message out
again after the visibility timeout (hours, since jobs run for hours). So each worker, once ready,
looks for jobs still marked running by a worker that no longer answers and whose heartbeat is
stale, and queues them again; they resume from their last checkpoint.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta

from celery import bootsteps
from celery.signals import worker_ready
from celery.worker.control import inspect_command
from django.conf import settings
from django.utils import timezone

log = logging.getLogger(__name__)
_INFO: dict = {"gpus": None}


def gpu_names() -> list[str]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def requeue_orphans(live_workers: set[str], grace_s: float) -> list[int]:
    """Queue again the jobs of dead workers; returns their ids. Safe to run on every worker."""
    from apps.jobs.models import Job
    from apps.jobs.services import task_options
    from worker.progress import set_state
    from worker.tasks import run_job

    stale = timezone.now() - timedelta(seconds=grace_s)
    requeued = []
    orphans = (
        Job.objects.filter(state__in=[Job.State.RUNNING, Job.State.CANCELLING], heartbeat_at__lt=stale)
        .exclude(worker__in=live_workers)
    )
    for job in orphans:
        if job.state == Job.State.CANCELLING:
            set_state(job.pk, Job.State.CANCELLED, attempt=job.attempt, message="cancelled (its worker died)")
            continue
        # Conditional on the attempt: two recovering workers can never both re-queue it.
        if Job.objects.filter(pk=job.pk, state=Job.State.RUNNING, attempt=job.attempt).update(
            state=Job.State.QUEUED, message=f"re-queued: worker {job.worker} stopped answering"
        ):
            log.warning("job %s: worker %s is gone; re-queued", job.pk, job.worker)
            run_job.apply_async(args=(job.pk,), **task_options(job))
            requeued.append(job.pk)
    return requeued


def _on_ready(hostname: str) -> None:
    from worker.celery import app

    try:
        replies = app.control.ping(timeout=settings.KLONG_WORKER_PING_TIMEOUT) or []
        live = {name for reply in replies for name in reply} | {hostname}
        requeue_orphans(live, settings.KLONG_JOB_HEARTBEAT_GRACE_S)
    except Exception:
        log.exception("could not check for orphaned jobs")
    _INFO["gpus"] = gpu_names()


@worker_ready.connect
def on_worker_ready(sender, **kwargs) -> None:
    # In a thread: the worker must keep answering control messages (pings) meanwhile.
    threading.Thread(target=_on_ready, args=(sender.hostname,), daemon=True, name="klong-ready").start()


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
