"""What every sandbox module shares: the spec, the result of a command, the errors, the unprivileged
user, and the Docker API client. No Django here."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import docker

SUBMISSION_DIR = "/home/submission"
LABEL = "klong.sandbox"  # every sandbox container carries it; klong.job names its job
JOB_LABEL = "klong.job"
# A CDI device name, vendor/class=name: "nvidia.com/gpu=0", "nvidia.com/gpu=all" (the CDI spec's form).
CDI_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*/[a-zA-Z0-9][a-zA-Z0-9_.-]*=[a-zA-Z0-9_.:-]+$")
EXPIRES_LABEL = "klong.expires"  # epoch seconds after which the sweep removes it whatever its job


class SandboxError(RuntimeError):
    """The sandbox cannot be created or used (no backend, image missing, container gone)."""


class SandboxBusy(SandboxError):
    """Every sandbox slot of this host is taken and none came free in time."""


def sandbox_uid() -> int:
    """The unprivileged user (and group) sandboxed commands run as, on every backend:
    KLONG_SANDBOX_UID, default 65534 (nobody). Never 0: root owns the host's secrets."""
    value = os.environ.get("KLONG_SANDBOX_UID", "").strip() or "65534"
    if not value.isdigit() or int(value) == 0:
        raise SandboxError(f"KLONG_SANDBOX_UID={value!r} must be a positive user id (not 0: root)")
    return int(value)


@dataclass(frozen=True)
class SandboxSpec:
    backend: str = "auto"  # "docker" | "bwrap" | "auto" (docker if its API answers, else bwrap)
    image: str = ""  # docker image ("" = KLONG_SANDBOX_IMAGE); bwrap ignores it (host root, read-only)
    cpus: float = 1.0
    memory_mb: int = 2048
    gpus: int = 0  # this many GPUs, whichever the engine picks (Docker device request, --gpus N)
    # Or named devices through CDI (Docker 25+ with the NVIDIA Container Toolkit's CDI spec):
    # ("nvidia.com/gpu=0",) or ("nvidia.com/gpu=all",). Docker backend only.
    gpu_devices: tuple[str, ...] = ()
    network: bool = False  # no network unless a job asks
    wall_clock_s: float = 3600  # the sandbox is killed this long after it was opened
    mounts_ro: dict[str, str] = field(default_factory=dict)  # host path -> sandbox path
    submission_dir: str = SUBMISSION_DIR  # writable, snapshotted
    job_id: int | None = None  # labels the container so cleanup finds it
    docker_host: str = ""  # "" = DOCKER_HOST from the environment
    # Docker: read-only folders as copies in volumes instead of bind mounts. None: copy when the
    # engine is on another machine (a tcp:// or ssh:// DOCKER_HOST), where our paths don't exist.
    copy_mounts: bool | None = None
    max_output_bytes: int = 1_000_000  # kept of each stream of one exec; the rest is dropped
    snapshot_max_file_mb: int = 100  # larger files (checkpoints, datasets) are left out of snapshots
    # Processes (threads count too) the sandbox's commands may run at once: a fork bomb stops here.
    max_processes: int = 256

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "docker", "bwrap"):
            raise ValueError(f"unknown sandbox backend {self.backend!r} (docker, bwrap or auto)")
        if self.cpus <= 0 or self.memory_mb < 16 or self.gpus < 0 or self.wall_clock_s <= 0:
            raise ValueError("cpus and wall_clock_s must be positive, memory_mb at least 16, gpus >= 0")
        if self.gpus and self.gpu_devices:
            raise ValueError("ask for GPUs by count (gpus) or by CDI name (gpu_devices), not both")
        for name in self.gpu_devices:
            if not CDI_NAME.match(name):
                raise ValueError(f"{name!r} is not a CDI device name (vendor/class=name, e.g. nvidia.com/gpu=0)")
        if self.max_processes < 8:
            raise ValueError("max_processes must be at least 8 (a shell and its pipeline)")
        for path in [self.submission_dir, *self.mounts_ro.values()]:
            if not path.startswith("/") or ".." in Path(path).parts:
                raise ValueError(f"sandbox paths must be absolute without '..': {path!r}")


    @property
    def wants_gpus(self) -> bool:
        return bool(self.gpus or self.gpu_devices)

    def gpus_expected(self) -> int:
        """How many GPU devices the sandbox must see: the count, or one per named device (at
        least one for a name like nvidia.com/gpu=all)."""
        return self.gpus or len(self.gpu_devices)


@dataclass
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    truncated: bool = False  # output beyond max_output_bytes was dropped

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@runtime_checkable
class Sandbox(Protocol):
    spec: SandboxSpec
    backend: str

    def exec(self, command: str, timeout_s: float = 60, workdir: str | None = None) -> ExecResult: ...

    def write_file(self, path: str, data: bytes) -> None: ...

    def read_file(self, path: str, max_bytes: int | None = None) -> bytes: ...

    def snapshot(self, message: str) -> str | None: ...

    def restore(self, commit: str) -> None: ...

    def export_submission(self, dest: Path, commit: str | None = None) -> Path: ...

    def export_submissions(self, dest_of: dict[str, Path]) -> None: ...

    def copy_in(self, host_path: Path, sandbox_path: str) -> None: ...

    def copy_out(self, sandbox_path: str, dest: Path, max_bytes: int = 1 << 30) -> Path: ...

    def close(self) -> None: ...


def docker_client(docker_host: str = "", timeout: float = 60):
    """A Docker SDK client for ``docker_host`` (or $DOCKER_HOST); raises SandboxError if none answers."""
    try:
        if docker_host:
            client = docker.DockerClient(base_url=docker_host, timeout=timeout)
        else:
            client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:
        where = docker_host or os.environ.get("DOCKER_HOST") or "the default socket"
        raise SandboxError(f"no Docker API answers at {where}: {type(exc).__name__}: {exc}") from None
    return client


def docker_available(docker_host: str = "") -> bool:
    try:
        docker_client(docker_host, timeout=5).close()
        return True
    except SandboxError:
        return False


def resolve_backend(spec: SandboxSpec) -> str:
    if spec.backend != "auto":
        return spec.backend
    return "docker" if docker_available(spec.docker_host) else "bwrap"


def slot_key(backend: str, docker_host: str = "") -> str:
    """The key a sandbox's slot is counted under (worker/sandbox/limits.py, the heartbeat's
    count): a Docker engine is shared by every worker using it, so docker slots are per
    DOCKER_HOST ("default" for the local socket); bubblewrap sandboxes are per machine."""
    if backend == "docker":
        return docker_host or os.environ.get("DOCKER_HOST", "") or "default"
    return f"bwrap:{socket.gethostname()}"
