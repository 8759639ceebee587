"""Sandboxes: where an agent's commands run. One interface, two real backends.

- ``docker``: a container through the Docker SDK (Docker, or podman serving the Docker API), with
  CPU, memory and GPU requests, no network unless asked, labelled with its job so a sweep can
  remove it if its worker dies (worker/sandbox/cleanup.py).
- ``bwrap``: bubblewrap on the worker's own machine, for a single box without a container engine:
  the host filesystem read-only, a private writable submission folder, no network unless asked.

Both keep the submission folder's history in a git repository *outside* that folder, so the
agent cannot rewrite it: ``snapshot()`` commits the folder as it is now and returns the commit,
``export_submission()`` writes any commit's tree to a host folder for judging, ``restore()`` puts
an old state back. No Django here; ``open_sandbox`` reads Django settings only when they are
configured (the per-host concurrency limit).
"""

from __future__ import annotations

import time
from typing import Any

from worker.sandbox.bwrap_backend import BwrapSandbox
from worker.sandbox.docker_backend import DockerSandbox
from worker.sandbox.limits import default_slots
from worker.sandbox.spec import (
    EXPIRES_LABEL,
    JOB_LABEL,
    LABEL,
    SUBMISSION_DIR,
    ExecResult,
    Sandbox,
    SandboxBusy,
    SandboxError,
    SandboxSpec,
    docker_available,
    docker_client,
    resolve_backend,
    sandbox_uid,
    slot_key,
)


def open_sandbox(spec: SandboxSpec, *, slots: Any = "auto", acquire_timeout_s: float = 600) -> Sandbox:
    """Open a sandbox (a context manager too: ``with open_sandbox(spec) as box:``).

    ``slots`` limits sandboxes per Docker host: "auto" takes a ``HostSlots`` from Django settings
    (KLONG_SANDBOXES_PER_HOST, Redis) when Django is configured, None means no limit.
    """
    backend = resolve_backend(spec)
    if slots == "auto":
        slots = default_slots()
    lease = None
    if slots is not None:
        lease = slots.acquire(slot_key(backend, spec.docker_host), hold_s=spec.wall_clock_s + 120,
                              timeout_s=acquire_timeout_s)
    try:
        if backend == "docker":
            box: Any = DockerSandbox(spec)
        else:
            box = BwrapSandbox(spec)
    except BaseException:
        if lease is not None:
            lease.release()
        raise
    box._lease = lease
    return box


def deadline_left(opened_at: float, spec: SandboxSpec) -> float:
    return spec.wall_clock_s - (time.monotonic() - opened_at)


# The package's interface: callers import these from worker.sandbox.
__all__ = [
    "EXPIRES_LABEL", "ExecResult", "JOB_LABEL", "LABEL", "SUBMISSION_DIR", "Sandbox", "SandboxBusy", "SandboxError",
    "SandboxSpec", "docker_available", "docker_client", "open_sandbox", "resolve_backend", "sandbox_uid", "slot_key",
]
