"""Worker heartbeats in Redis: every worker, on every machine, says every few seconds who it is,
what it consumes and what it is doing.

The workers page asks the live workers over the broker (``klong_info``), but a worker that died,
lost its network or sits behind a solo pool busy with a task does not answer. The heartbeat hash
keeps the last word of each one, so the page (and /metrics) can show a silent worker as silent
instead of letting it vanish, and a fleet of hundreds is read with one HGETALL.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import threading
import time
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections

from apps.jobs.heartbeats import heartbeats_key, redis_client
from apps.jobs.models import Job
from worker.lifecycle import _INFO, BOOT_ID, pool_pids
from worker.sandbox import slot_key
from worker.sandbox.limits import default_slots

log = logging.getLogger(__name__)

_stop = threading.Event()


def sandbox_host() -> str:
    """The key this worker's sandboxes are counted under, as worker.sandbox.open_sandbox names it:
    the Docker host (DOCKER_HOST, "default" for the local socket), or the machine-local bubblewrap."""
    backend = "bwrap" if getattr(settings, "KLONG_SANDBOX_BACKEND", "auto") == "bwrap" else "docker"
    return slot_key(backend)


def sandbox_count() -> int | None:
    """Sandboxes running now on this worker's sandbox host (every worker sharing the host reports
    the same count: the per-host slots in Redis, worker/sandbox/limits.py); None without limits."""
    try:
        slots = default_slots()
        return None if slots is None else int(slots.in_use(sandbox_host()))
    except Exception:  # a broken count must not stop the heartbeat
        log.exception("sandbox count failed")
        return None


def describe(consumer: Any) -> dict:
    """This worker's identity and load, as the workers page and /metrics show it."""
    hostname = consumer.hostname
    return {
        "name": hostname,
        "node": socket.gethostname(),
        "pid": os.getpid(),
        # Which start of this worker, and its pool processes: how orphaned jobs are recognised.
        "boot": BOOT_ID,
        "processes": pool_pids(consumer),
        "queues": sorted(q.name for q in consumer.task_consumer.queues),
        "concurrency": getattr(consumer.pool, "num_processes", None) or consumer.controller.concurrency,
        "gpus": _INFO["gpus"],
        # what the launch forms check before accepting a zero3 job (apps/jobs/forms_sharding.py)
        "deepspeed": importlib.util.find_spec("deepspeed") is not None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "docker_host": sandbox_host(),
        "sandboxes": sandbox_count(),
        "running_jobs": Job.objects.filter(worker=hostname, state__in=[Job.State.RUNNING, Job.State.CANCELLING]).count(),
        "seen_at": time.time(),
    }


def beat(info: dict, client=None) -> None:
    (client or redis_client()).hset(heartbeats_key(), info["name"], json.dumps(info))


def forget(name: str, client=None) -> None:
    (client or redis_client()).hdel(heartbeats_key(), name)


def _loop(consumer: Any) -> None:
    client = redis_client()
    while not _stop.is_set():
        try:
            beat(describe(consumer), client)
        except Exception:  # Redis or the database briefly away: try again at the next beat
            log.warning("heartbeat failed", exc_info=True)
        # A thread that lives as long as the worker must not keep a dead database connection.
        close_old_connections()
        _stop.wait(settings.KLONG_WORKER_HEARTBEAT_S)


@worker_ready.connect
def start_heartbeat(sender, **kwargs) -> None:
    _stop.clear()
    threading.Thread(target=_loop, args=(sender,), daemon=True, name="klong-heartbeat").start()


@worker_shutdown.connect
def stop_heartbeat(sender, **kwargs) -> None:
    # A clean stop leaves no entry behind: only workers that died show as silent.
    _stop.set()
    try:
        forget(sender.hostname)
    except Exception:
        log.warning("could not remove the heartbeat of %s", sender.hostname, exc_info=True)
