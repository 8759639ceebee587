"""The Docker backend: one container per sandbox, through the Docker SDK.

Works against Docker or podman's Docker-compatible API (DOCKER_HOST=unix:///tmp/podman.sock).
The container's main process is ``sleep <wall clock>``: when the deadline passes the container
stops by itself even if the worker that opened it is gone, and the sweep
(worker/sandbox/cleanup.py) removes what is left by its labels.

Each command runs under ``timeout`` inside the container, which signals the command's whole
process group (TERM, then KILL a second later). Snapshots are git commits made inside the
container with GIT_DIR outside the submission folder (the image needs git; the default image,
worker/sandbox/image.py, has it).
"""

from __future__ import annotations

import io
import logging
import math
import shlex
import tarfile
import time
from collections.abc import Sequence
from pathlib import PurePosixPath

from worker.sandbox import EXPIRES_LABEL, JOB_LABEL, LABEL, ExecResult, SandboxError, SandboxSpec, docker_client
from worker.sandbox.base import BaseSandbox, OutputCap
from worker.sandbox.cleanup import OWNER_LABEL, owner_id

log = logging.getLogger(__name__)
GIT_DIR = "/var/lib/klong-snapshots"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
# A command timed out: GNU timeout exits 124 after TERM worked, 137 when KILL was needed.
TIMEOUT_CODES = (124, 137)


def container_kwargs(spec: SandboxSpec, image: str) -> dict:
    """The ``containers.run`` arguments for a spec (pure: tests read them without an engine)."""
    import docker.types

    deadline = time.time() + spec.wall_clock_s
    kwargs: dict = {
        "image": image,
        "command": ["sleep", str(math.ceil(spec.wall_clock_s))],
        "detach": True,
        # An init as pid 1 reaps what a killed command leaves behind (podman ships catatonit).
        "init": True,
        "labels": {LABEL: "1", JOB_LABEL: str(spec.job_id or ""), EXPIRES_LABEL: str(int(deadline)),
                   OWNER_LABEL: owner_id()},
        "nano_cpus": int(spec.cpus * 1e9),
        "mem_limit": f"{spec.memory_mb}m",
        "memswap_limit": f"{spec.memory_mb}m",  # the same as memory: no swap to hide in
        "pids_limit": 4096,
        "environment": {"HOME": "/home", "PATH": SANDBOX_PATH, "SUBMISSION_DIR": spec.submission_dir},
        "working_dir": "/",
        "security_opt": ["no-new-privileges"],
        "volumes": {host: {"bind": inside, "mode": "ro"} for host, inside in spec.mounts_ro.items()},
    }
    if spec.network:
        kwargs["network_mode"] = "bridge"
    else:
        kwargs["network_mode"] = "none"
    if spec.gpus:
        kwargs["device_requests"] = [docker.types.DeviceRequest(count=spec.gpus, capabilities=[["gpu"]])]
    return kwargs


def default_image() -> str:
    """KLONG_SANDBOX_IMAGE when Django is configured, else the image worker/sandbox/image.py builds."""
    from worker.sandbox.image import DEFAULT_IMAGE

    try:
        from django.conf import settings

        if settings.configured:
            return getattr(settings, "KLONG_SANDBOX_IMAGE", "") or DEFAULT_IMAGE
    except ImportError:
        pass
    return DEFAULT_IMAGE


class DockerSandbox(BaseSandbox):
    backend = "docker"

    def __init__(self, spec: SandboxSpec) -> None:
        super().__init__(spec)
        import docker.errors

        self.image = spec.image or default_image()
        # Reads may block as long as a command runs: the client timeout covers the wall clock.
        self.client = docker_client(spec.docker_host, timeout=spec.wall_clock_s + 60)
        try:
            self.client.images.get(self.image)
        except docker.errors.ImageNotFound:
            self.client.close()
            raise SandboxError(
                f"image {self.image} is not on the Docker host; build it with `manage.py build_sandbox_image`"
            ) from None
        self.container = None
        try:
            self.container = self.client.containers.run(**container_kwargs(spec, self.image))
            self.id = self.container.id
            # One exec for the folders, the repository and the first commit.
            self._init_snapshots(before=f"mkdir -p {shlex.quote(spec.submission_dir)} {GIT_DIR} && cd {GIT_DIR} && ")
        except BaseException as exc:
            self.close()
            if isinstance(exc, docker.errors.APIError):
                raise SandboxError(f"cannot start the sandbox container: {exc.explanation or exc}") from None
            raise

    def _exec_raw(self, argv: Sequence[str], timeout_s: float, workdir: str | None,
                  limit: int | None = None, env: dict[str, str] | None = None,
                  ) -> tuple[int, OutputCap, OutputCap, bool, float]:
        if self._closed:
            raise SandboxError("the sandbox is closed")
        left = self.time_left()
        if left <= 0:
            self.close()
            cap = OutputCap(100)
            cap.add(b"sandbox wall-clock limit reached; the sandbox was removed")
            return 137, OutputCap(0), cap, True, 0.0
        timeout = max(0.1, min(timeout_s, left))
        wrapped = ["timeout", "-k", "1", f"{timeout:.2f}", *argv]
        api = self.client.api
        started = time.monotonic()
        out = OutputCap(limit or self.spec.max_output_bytes)
        err = OutputCap(self.spec.max_output_bytes)
        try:
            exec_id = api.exec_create(self.id, wrapped, stdout=True, stderr=True,
                                      workdir=workdir or self.spec.submission_dir, environment=env)["Id"]
            for chunk_out, chunk_err in api.exec_start(exec_id, stream=True, demux=True):
                out.add(chunk_out)
                err.add(chunk_err)
            code = api.exec_inspect(exec_id).get("ExitCode")
        except Exception as exc:  # the container was removed under us (cancel, wall clock) or the API died
            if self._closed:
                raise SandboxError("the sandbox was closed while the command ran") from None
            raise SandboxError(f"the Docker API failed: {type(exc).__name__}: {exc}") from None
        duration = time.monotonic() - started
        code = 137 if code is None else int(code)
        timed_out = code in TIMEOUT_CODES and duration >= timeout - 0.05
        return code, out, err, timed_out, duration

    def exec(self, command: str, timeout_s: float = 60, workdir: str | None = None) -> ExecResult:
        code, out, err, timed_out, duration = self._exec_raw(["sh", "-c", command], timeout_s, workdir)
        return ExecResult(code, out.text(), err.text(), timed_out, duration, bool(out.dropped or err.dropped))

    def write_file(self, path: str, data: bytes) -> None:
        import docker.errors

        target = PurePosixPath(path if path.startswith("/") else f"{self.spec.submission_dir}/{path}")
        made = self._exec_raw(["mkdir", "-p", "--", str(target.parent)], 60, "/")
        if made[0] != 0:
            raise SandboxError(f"cannot write {path}: {made[2].text().strip()[-300:]}")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(target.name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
        try:
            ok = self.client.api.put_archive(self.id, str(target.parent), buffer.getvalue())
        except docker.errors.APIError as exc:
            raise SandboxError(f"cannot write {path}: {exc.explanation or exc}") from None
        if not ok:
            raise SandboxError(f"cannot write {path}")

    def read_file(self, path: str, max_bytes: int | None = None) -> bytes:
        limit = max_bytes if max_bytes is not None else self.spec.max_output_bytes
        code, out, err, _, _ = self._exec_raw(
            ["sh", "-c", 'test -f "$1" && head -c "$2" -- "$1"', "read_file", path, str(limit)], 120, "/", limit + 1
        )
        if code != 0:
            raise SandboxError(f"cannot read {path}: {err.text().strip()[-300:] or 'not a file'}")
        return out.data[:limit]

    def _git_shell(self, script: str, timeout_s: float = 120) -> tuple[int, bytes, bytes]:
        env = {"GIT_DIR": GIT_DIR, "GIT_WORK_TREE": self.spec.submission_dir, "GIT_CONFIG_NOSYSTEM": "1",
               "HOME": "/root"}
        code, out, err, _, _ = self._exec_raw(["sh", "-c", script], timeout_s, "/", limit=1 << 30, env=env)
        if code == 127:
            raise SandboxError(f"the image {self.image} has no git: snapshots need it")
        return code, out.data, err.data

    def _teardown(self) -> None:
        import docker.errors

        if self.container is not None:
            try:
                # force: kill and remove in one call (the same as docker rm -f)
                self.container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:
                log.warning("could not remove sandbox container %s; the sweep will", self.container.id,
                            exc_info=True)
        self.client.close()

