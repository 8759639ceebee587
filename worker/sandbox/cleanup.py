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

podman leaves one more thing per command: each exec session's conmon (a pair of processes)
sleeps ``exit_command_delay`` (containers.conf, 5 minutes by default, "to mimic Docker") after
the command ended before it runs its cleanup, and outlives the container. A sandbox ends its
own exec sessions' conmons once it has read their exit code (worker/sandbox/docker_backend.py);
``sweep_engine_leftovers`` ends those whose container is gone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import docker.errors
from django.conf import settings

from apps.jobs.models import Job
from worker.sandbox.spec import EXPIRES_LABEL, JOB_LABEL, LABEL, SandboxError, docker_client

log = logging.getLogger(__name__)
OWNER_LABEL = "klong.owner"
# Which KLong installation a container belongs to: job ids are only unique within one database,
# and two installations (or two test runs) may share a container engine.
DEPLOYMENT_LABEL = "klong.deployment"


def deployment_id() -> str:
    """A short id of this installation: its database (every worker of a fleet shares it);
    "" without Django settings."""
    try:

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

    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError:
        log.warning("could not remove sandbox container %s", container.short_id, exc_info=True)


def job_is_live(job_id: int) -> bool:
    """Django side: a job whose sandboxes may still be in use (queued, running, cancelling)."""

    return Job.objects.filter(
        pk=job_id, state__in=[Job.State.QUEUED, Job.State.RUNNING, Job.State.CANCELLING]
    ).exists()


@dataclass(frozen=True)
class Conmon:
    """A conmon process of a podman on this machine: it watches one container or one exec session."""

    pid: int
    parent: int
    container: str
    session: str  # the exec session's id; the container's own conmon has the container's id here
    bundle: str  # its folder under the engine's storage root

    @property
    def of_exec(self) -> bool:
        return self.session != self.container


def _option(argv: list[str], *names: str) -> str:
    for index, arg in enumerate(argv[:-1]):
        if arg in names:
            return argv[index + 1]
    return ""


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)  # os.open: a scan reads a file per process, open() costs twice as much
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


def local_conmons(naming: str = "", proc: str = "/proc") -> list[Conmon]:
    """The conmon processes this machine shows (whose command line contains ``naming``): none
    where the engine is Docker, runs on another machine or in another pid namespace."""
    found = []
    needle = naming.encode()
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            if _read(f"{proc}/{name}/comm") != b"conmon\n":
                continue
            raw = _read(f"{proc}/{name}/cmdline")
            if needle not in raw:
                continue
            parent = int(_read(f"{proc}/{name}/stat").rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # it ended while we looked
            continue
        argv = raw.decode(errors="replace").split("\0")
        container = _option(argv, "-c", "--cid")
        if container:
            found.append(Conmon(int(name), parent, container, _option(argv, "-u", "--cuuid") or container,
                                _option(argv, "-b", "--bundle")))
    return found


def end_conmons(select: Callable[[Conmon], bool], naming: str = "", rounds: int = 5) -> list[Conmon]:
    """Kill the conmons ``select`` picks (of those naming ``naming``). A conmon forks one child, the sleeper that runs its exit
    command: when one was found without its child, another look catches a child forked just
    before the kill. PermissionError when they are not ours to signal (a worker that is not the
    engine's user)."""
    ended: list[Conmon] = []
    for _ in range(rounds):
        chosen = [conmon for conmon in local_conmons(naming) if select(conmon)]
        for conmon in chosen:
            try:
                os.kill(conmon.pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            ended.append(conmon)
        pids = {conmon.pid for conmon in chosen}
        if all(conmon.parent in pids or conmon.pid in {c.parent for c in chosen} for conmon in chosen):
            break
    return ended


def _resident_mb(pids: Iterable[int]) -> float:
    total_kb = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                total_kb += next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError):
            continue
    return total_kb / 1024


def storage_root(client) -> str:
    """Where the engine keeps its containers: a podman's conmons run from folders under it."""
    try:
        return (client.info().get("DockerRootDir") or "").rstrip("/")
    except Exception:
        log.warning("could not ask the engine where it keeps its containers", exc_info=True)
        return ""


def sweep_engine_leftovers(docker_host: str = "") -> list[Conmon]:
    """Kill the exec-session conmons on this machine whose container the engine no longer has
    (podman keeps each for exit_command_delay after its command, whatever became of the
    container). The engine is taken to be local when conmons run from folders under its storage
    root: another engine's (Docker's root, a rootless podman of another user) are left alone, and
    nothing is asked of the engine when no exec session's conmon is in sight."""
    sessions = [conmon for conmon in local_conmons() if conmon.of_exec]
    client = _client(docker_host) if sessions else None
    if client is None:
        return []

    try:
        root = storage_root(client)
        candidates = [c for c in sessions if root and c.bundle.startswith(f"{root}/")]
        gone: set[str] = set()
        for container in {c.container for c in candidates}:
            try:
                client.api.inspect_container(container)
            except docker.errors.NotFound:
                gone.add(container)
    finally:
        client.close()
    leftovers = [c for c in candidates if c.container in gone]
    if not leftovers:
        return []
    memory = _resident_mb(c.pid for c in leftovers)
    try:
        ended = end_conmons(lambda c: c.of_exec and c.container in gone)
    except PermissionError:
        log.warning("%d conmon processes of removed containers hold %.0f MB; this worker may not end them "
                    "(lower exit_command_delay in the engine's containers.conf)", len(leftovers), memory)
        return []
    log.warning("ended %d conmon processes (%.0f MB) left by exec sessions of %d removed container(s)",
                len(ended), memory, len(gone))
    return ended
