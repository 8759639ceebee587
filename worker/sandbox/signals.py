"""Worker signals for sandboxes (imported by klong_site/celery_app.py, as worker/lifecycle.py is).

- When a job's task ends, whatever sandbox containers this process still holds for it go.
- When a worker is ready, a sweep removes containers left by dead workers or finished jobs, and
  ends the processes a local podman kept for exec sessions of containers that are gone.
"""

from __future__ import annotations

import logging
import threading

from celery.signals import task_postrun, worker_ready

from apps.jobs.models import Job
from apps.jobs.registry import KINDS
from worker.sandbox.cleanup import (
    job_is_live,
    remove_job_sandboxes,
    sweep_bwrap_folders,
    sweep_engine_leftovers,
    sweep_orphans,
)

log = logging.getLogger(__name__)


@task_postrun.connect
def on_task_postrun(sender=None, args=None, **kwargs) -> None:
    if getattr(sender, "name", "") != "klong.run_job" or not args:
        return

    try:
        kind = Job.objects.filter(pk=args[0]).values_list("kind", flat=True).first()
        if kind and KINDS.get(kind) and KINDS[kind].uses_sandboxes:
            remove_job_sandboxes(int(args[0]))
    except Exception:
        log.exception("could not clean up the sandboxes of job %s", args[0])


def _sweep() -> None:
    try:
        removed = sweep_orphans(job_is_live)
        sweep_engine_leftovers()  # logs what it ended
        folders = sweep_bwrap_folders(job_is_live)
        if removed or folders:
            log.warning("removed %d orphaned sandbox container(s) and %d bwrap folder(s)", len(removed), len(folders))
    except Exception:
        log.exception("could not sweep orphaned sandboxes")


@worker_ready.connect
def on_worker_ready(sender=None, **kwargs) -> None:
    # In a thread: listing containers must not hold up the worker's start.
    threading.Thread(target=_sweep, daemon=True, name="klong-sandbox-sweep").start()
