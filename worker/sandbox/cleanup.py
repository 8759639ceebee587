"""A sandbox never outlives its job.

Three layers, each enough on its own for the case it covers:
1. the engine closes its sandbox in ``finally`` (normal end, error, cancel, time limit);
2. when a job's task ends, ``remove_job_sandboxes`` removes every container this process opened
   for it (an engine that forgot, or crashed past its ``finally``);
3. when a worker starts, ``sweep_orphans`` removes containers whose job has finished, whose
   wall clock has passed, or whose owning process on this machine is gone (a worker killed with
   SIGKILL); and the folders of bwrap sandboxes whose job is not running (their processes died
   with the worker, bwrap runs with --die-with-parent, but their files stay).

Containers are found by their labels: klong.sandbox, klong.job, klong.owner (host:pid),
klong.expires (epoch seconds) and klong.deployment (this installation: a job id means nothing
to another installation sharing the engine, so neither cleanup touches its containers).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable

from worker.sandbox import EXPIRES_LABEL, JOB_LABEL, LABEL, SandboxError, docker_client

log = logging.getLogger(__name__)
OWNER_LABEL = "klong.owner"
# Which KLong installation a container belongs to: job ids are only unique within one database,
# and two installations (or two test runs) may share a container engine.
DEPLOYMENT_LABEL = "klong.deployment"


def deployment_id() -> str:
    """A short id of this installation: its database (every worker of a fleet shares it);
    "" without Django settings."""
    try:
        from django.conf import settings

        if not settings.configured:
            return ""
        db = settings.DATABASES["default"]
        identity = f"{db['ENGINE']}|{db.get('HOST', '')}|{db.get('PORT', '')}|{db['NAME']}"
        if "sqlite" in db["ENGINE"]:  # one machine; a test database's name is the same in every run
            identity += f"|{settings.DATA_DIR}"
    except Exception:
        return ""
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _client(docker_host: str):
    try:
        return docker_client(docker_host, timeout=30)
    except SandboxError:
        return None  # no Docker API here: nothing of ours can be running on it


def remove_job_sandboxes(job_id: int, docker_host: str = "", *, any_owner: bool = False) -> list[str]:
    """Remove the containers of ``job_id`` opened by this process (or by anyone)."""
    client = _client(docker_host)
    if client is None:
        return []
    filters = {"label": [f"{LABEL}=1", f"{JOB_LABEL}={job_id}", f"{DEPLOYMENT_LABEL}={deployment_id()}"]}
    if not any_owner:
        filters["label"].append(f"{OWNER_LABEL}={owner_id()}")
    removed = []
    try:
        for container in client.containers.list(all=True, filters=filters):
            _remove(container)
            removed.append(container.id)
        _prune_volumes(client, filters)
    finally:
        client.close()
    if removed:
        log.warning("job %s ended with %d sandbox container(s) still there; removed them", job_id, len(removed))
    return removed


def sweep_orphans(job_is_live: Callable[[int], bool], docker_host: str = "") -> list[str]:
    """Remove sandbox containers nobody will close; returns their ids."""
    client = _client(docker_host)
    if client is None:
        return []
    here = socket.gethostname()
    removed = []
    try:
        ours = {"label": [f"{LABEL}=1", f"{DEPLOYMENT_LABEL}={deployment_id()}"]}
        for container in client.containers.list(all=True, filters=ours):
            labels = container.labels or {}
            reason = orphan_reason(labels, job_is_live, here)
            if reason:
                log.warning("removing sandbox container %s: %s", container.short_id, reason)
                _remove(container)
                removed.append(container.id)
        _prune_volumes(client, ours)
    finally:
        client.close()
    return removed


def _prune_volumes(client, filters: dict) -> None:
    """Copied read-only folders (worker/sandbox/docker_backend.py) that no container uses any more."""
    try:
        client.volumes.prune(filters=filters)
    except Exception:  # an engine without volume pruning: the volumes wait for the next sweep
        log.warning("could not prune sandbox volumes", exc_info=True)


def sweep_bwrap_folders(job_is_live: Callable[[int], bool], root: str | None = None) -> list[str]:
    """Remove the folders of bwrap sandboxes whose job is not running: a worker killed with
    SIGKILL takes its sandboxes' processes with it (--die-with-parent) but leaves their files.
    Only this installation's folders (named klong-bwrap-<installation>-<job>-...)."""
    import shutil
    import tempfile
    from pathlib import Path

    prefix = f"klong-bwrap-{deployment_id() or 'x'}-"
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(prefix + "*"):
        job = folder.name[len(prefix):].split("-", 1)[0]
        if folder.is_dir() and job.isdigit() and not job_is_live(int(job)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed


def orphan_reason(labels: dict[str, str], job_is_live: Callable[[int], bool], here: str) -> str:
    """Why a container with these labels should go ("" = keep it)."""
    try:
        if float(labels.get(EXPIRES_LABEL, "inf")) < time.time():
            return "its wall clock has passed"
    except ValueError:
        pass
    job = labels.get(JOB_LABEL, "")
    if job.isdigit() and not job_is_live(int(job)):
        return f"job {job} is not running"
    host, _, pid = labels.get(OWNER_LABEL, "").rpartition(":")
    if host == here and pid.isdigit() and not _pid_alive(int(pid)):
        return f"its worker process {pid} is gone"
    return ""


def _remove(container) -> None:
    import docker.errors

    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError:
        log.warning("could not remove sandbox container %s", container.short_id, exc_info=True)


def job_is_live(job_id: int) -> bool:
    """Django side: a job whose sandboxes may still be in use (queued, running, cancelling)."""
    from apps.jobs.models import Job

    return Job.objects.filter(
        pk=job_id, state__in=[Job.State.QUEUED, Job.State.RUNNING, Job.State.CANCELLING]
    ).exists()
