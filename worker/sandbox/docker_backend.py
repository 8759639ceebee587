"""The Docker backend: one container per sandbox, through the Docker SDK.

Works against Docker or podman's Docker-compatible API (DOCKER_HOST=unix:///tmp/podman.sock).
The container's main process is ``sleep <wall clock>``: when the deadline passes the container
stops by itself even if the worker that opened it is gone, and the sweep
(worker/sandbox/cleanup.py) removes what is left by its labels.

Each command runs under ``timeout`` inside the container, which signals the command's whole
process group (TERM, then KILL a second later). Snapshots are git commits made inside the
container with GIT_DIR outside the submission folder (the image needs git; the default image,
worker/sandbox/image.py, has it).

Users: the agent's commands exec as the image's USER when that is not root, else as
KLONG_SANDBOX_UID, never as root, with no capability, no-new-privileges and the spec's process
limit. The container itself is root's: only our own fixed scripts (the snapshots, handing files
back to the agent's user) exec as root, with the two capabilities they need (ROOT_SCRIPT_CAPS).
"""

from __future__ import annotations

import io
import logging
import math
import os
import shlex
import stat
import tarfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import docker.errors
import docker.types
from django.conf import settings

from worker.sandbox.base import BaseSandbox, OutputCap, RawResult
from worker.sandbox.cleanup import (
    DEPLOYMENT_LABEL,
    OWNER_LABEL,
    Conmon,
    deployment_id,
    end_conmons,
    local_conmons,
    owner_id,
)
from worker.sandbox.image import DEFAULT_IMAGE
from worker.sandbox.spec import EXPIRES_LABEL, JOB_LABEL, LABEL, SandboxError, SandboxSpec, docker_client, sandbox_uid

log = logging.getLogger(__name__)
GIT_DIR = "/var/lib/klong-snapshots"
# Files the worker puts in land here first (a drop box: anyone may add, only root may list) and
# the agent's own user unpacks them, so a write reaches nothing the agent could not write itself.
INBOX = "/var/lib/klong-inbox"
AGENT_HOME = "/home/agent"  # HOME of KLONG_SANDBOX_UID (an image whose USER is root)
ROOT = "0:0"
# What root needs for our own scripts, never held by the agent's commands: DAC_OVERRIDE to
# snapshot files the agent made private (mkstemp's 0600) and to restore into its folders, CHOWN
# to hand the submission folder and restored files to the agent's user.
ROOT_SCRIPT_CAPS = ["CHOWN", "DAC_OVERRIDE"]
# A command timed out: GNU timeout exits 124 after TERM worked, 137 when KILL was needed.
TIMEOUT_CODES = (124, 137)


REMOTE_SCHEMES = ("tcp://", "ssh://", "http://", "https://")


def copies_mounts(spec: SandboxSpec) -> bool:
    """Whether the read-only folders go in as copies (see SandboxSpec.copy_mounts)."""
    if spec.copy_mounts is not None:
        return spec.copy_mounts
    return (spec.docker_host or os.environ.get("DOCKER_HOST", "")).startswith(REMOTE_SCHEMES)


def sandbox_labels(spec: SandboxSpec, deadline: float) -> dict[str, str]:
    """What cleanup finds a sandbox's container and volumes by."""
    return {LABEL: "1", JOB_LABEL: str(spec.job_id or ""), EXPIRES_LABEL: str(int(deadline)),
            OWNER_LABEL: owner_id(), DEPLOYMENT_LABEL: deployment_id()}


def container_kwargs(spec: SandboxSpec, image: str, volumes: dict[str, dict] | None = None) -> dict:
    """The ``containers.run`` arguments for a spec (pure: tests read them without an engine).
    ``volumes``: the copied read-only folders (volume name -> mount) replacing the bind mounts."""

    deadline = time.time() + spec.wall_clock_s
    kwargs: dict = {
        "image": image,
        "command": ["sleep", str(math.ceil(spec.wall_clock_s))],
        "detach": True,
        # An init as pid 1 reaps what a killed command leaves behind (podman ships catatonit).
        "init": True,
        "labels": sandbox_labels(spec, deadline),
        "nano_cpus": int(spec.cpus * 1e9),
        "mem_limit": f"{spec.memory_mb}m",
        "memswap_limit": f"{spec.memory_mb}m",  # the same as memory: no swap to hide in
        # Counts every process and thread in the container: a fork bomb stops here.
        "pids_limit": spec.max_processes,
        # The container is root's, for our own scripts; the agent's commands exec as another user
        # (DockerSandbox.user) and so hold no capability. Not the agent's user here: podman gives
        # the user a container is created with the added capabilities as ambient ones.
        "user": ROOT,
        "cap_drop": ["ALL"],
        "cap_add": ROOT_SCRIPT_CAPS,
        # Only what is ours: the image keeps its own PATH and HOME (a venv on PATH, the user's home).
        "environment": {"SUBMISSION_DIR": spec.submission_dir},
        "working_dir": "/",
        "security_opt": ["no-new-privileges"],
        "volumes": volumes if volumes is not None else {
            host: {"bind": inside, "mode": "ro"} for host, inside in spec.mounts_ro.items()
        },
    }
    if spec.network:
        kwargs["network_mode"] = "bridge"
    else:
        kwargs["network_mode"] = "none"
    if spec.gpus:
        kwargs["device_requests"] = [docker.types.DeviceRequest(count=spec.gpus, capabilities=[["gpu"]])]
    elif spec.gpu_devices:
        # CDI: the engine injects the devices, libraries and hooks the vendor's CDI spec names.
        kwargs["device_requests"] = [docker.types.DeviceRequest(driver="cdi", device_ids=list(spec.gpu_devices))]
    return kwargs


def is_root(image_user: str) -> bool:
    """An image's USER that names root ("" is root too); a name that maps to uid 0 is found later."""
    return image_user.split(":")[0] in ("", "root", "0")


def default_image() -> str:
    """KLONG_SANDBOX_IMAGE when Django is configured, else the image worker/sandbox/image.py builds."""

    try:

        if settings.configured:
            return getattr(settings, "KLONG_SANDBOX_IMAGE", "") or DEFAULT_IMAGE
    except ImportError:
        pass
    return DEFAULT_IMAGE


def _readable_by_all(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Root's, readable by the agent's user whatever it is; the mount makes it read-only."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else (info.mode | 0o444) & 0o755
    return info


class DockerSandbox(BaseSandbox):
    backend = "docker"

    def __init__(self, spec: SandboxSpec) -> None:
        super().__init__(spec)

        self.image = spec.image or default_image()
        self.container = None
        self.volumes: list[str] = []  # copied read-only folders, removed with the container
        # Reads may block as long as a command runs: the client timeout covers the wall clock.
        self.client = docker_client(spec.docker_host, timeout=spec.wall_clock_s + 60)
        try:
            image = self.client.images.get(self.image)
        except docker.errors.ImageNotFound:
            self.client.close()
            raise SandboxError(
                f"image {self.image} is not on the Docker host; build it with `manage.py build_sandbox_image`"
            ) from None
        # The user the agent's commands exec as (see _choose_agent_user) and what they get added
        # to their environment; the snapshots exec as root, in a folder only root can open.
        uid = sandbox_uid()
        self.user, self.owner = f"{uid}:{uid}", (uid, uid)
        self.agent_env: dict[str, str] = {}
        self._reaps_conmons = False
        image_user = (image.attrs.get("Config") or {}).get("User") or ""
        if not copies_mounts(spec) and is_root(image_user):  # else known once the container runs
            self._check_mounts_readable()
        try:
            copies = self._copy_mounts() if copies_mounts(spec) else None
            self.container = self.client.containers.run(**container_kwargs(spec, self.image, copies))
            self.id = self.container.id
            # The container's own conmon in sight: podman on this machine, whose exec sessions
            # would each leave a conmon pair behind for 5 minutes (see _end_conmons).
            self._reaps_conmons = any(conmon.container == self.id for conmon in local_conmons(self.id))
            self._check_gpus()
            home = self._choose_agent_user(image_user)
            if copies is None and not is_root(image_user):
                self._check_mounts_readable()
            mine = " ".join(shlex.quote(folder) for folder in (spec.submission_dir, home) if folder)
            # One exec for the folders, the repository and the first commit.
            self._init_snapshots(
                before=f"mkdir -p {mine} {GIT_DIR} {INBOX} && chmod 700 {GIT_DIR} && chmod 1733 {INBOX} && "
                       f"chown {self.owner[0]}:{self.owner[1]} {mine} && cd {GIT_DIR} && "
            )
        except BaseException as exc:
            self.close()
            if isinstance(exc, docker.errors.APIError):
                raise SandboxError(f"cannot start the sandbox container: {exc.explanation or exc}") from None
            raise

    def _check_gpus(self) -> None:
        """A GPU request the engine did not honour fails here rather than leaving a run on the CPU
        for hours: podman's Docker API ignores device requests (containers/podman#22645), and a
        Docker host without the NVIDIA Container Toolkit (or its CDI spec) may start the
        container all the same. Counts the NVIDIA device nodes (/dev/nvidia0, 1, ...) it sees."""
        if not self.spec.wants_gpus:
            return
        code, out, _, _, _ = self._exec_raw(["/bin/sh", "-c", "ls /dev"], 60, "/", user=ROOT)
        seen = sum(1 for name in out.text().split() if name.startswith("nvidia") and name[6:].isdigit())
        if code != 0 or seen < self.spec.gpus_expected():
            asked = f"{self.spec.gpus} GPU(s)" if self.spec.gpus else f"GPU devices {', '.join(self.spec.gpu_devices)}"
            where = self.spec.docker_host or os.environ.get("DOCKER_HOST") or "the default socket"
            raise SandboxError(
                f"the sandbox asked for {asked} but its container sees {seen}: the Docker host at {where} did not "
                "give them (it needs the NVIDIA Container Toolkit, or a CDI spec for named devices; podman's "
                "Docker API ignores GPU requests)"
            )

    def _choose_agent_user(self, image_user: str) -> str:
        """The image's USER when it is not root (its HOME, venv and files kept), else
        KLONG_SANDBOX_UID with a home folder of its own; returns that folder ("" for the image's)."""
        if not is_root(image_user):
            code, out, _, _, _ = self._exec_raw(["/bin/sh", "-c", "id -u; id -g"], 60, "/", user=image_user)
            ids = out.text().split()
            if code == 0 and len(ids) == 2 and ids[0] != "0" and all(i.isdigit() for i in ids):
                self.user, self.owner = image_user, (int(ids[0]), int(ids[1]))
                return ""
        self.agent_env = {"HOME": AGENT_HOME}
        return AGENT_HOME

    def _check_mounts_readable(self) -> None:
        """A bind-mounted folder keeps its host owner and mode: refuse one the agent's user could
        not read, rather than give an agent a paper it cannot open."""
        uid, gid = self.owner
        for host in self.spec.mounts_ro:
            try:
                info = os.stat(host)
            except OSError as exc:
                raise SandboxError(f"mount source {host}: {exc.strerror}") from None
            shift = 6 if info.st_uid == uid else 3 if info.st_gid == gid else 0
            need = 0o5 if stat.S_ISDIR(info.st_mode) else 0o4
            if (info.st_mode >> shift) & need != need:
                raise SandboxError(f"{host} (mode {info.st_mode & 0o777:o}) is not readable by the sandbox's user "
                                   f"{uid}: make it readable by all (chmod -R a+rX)")

    def _copy_mounts(self) -> dict[str, dict]:
        """Each read-only folder copied into a volume of its own through the API (a short-lived
        container holds it while the files go in), then mounted read-only like a bind mount."""
        mounts = {}
        labels = sandbox_labels(self.spec, time.time() + self.spec.wall_clock_s)
        for host, inside in self.spec.mounts_ro.items():
            source = Path(host)
            if not source.is_dir():
                raise SandboxError(f"{host} is not a folder: only folders are copied to a remote Docker host")
            volume = self.client.volumes.create(labels=labels)
            self.volumes.append(volume.name)
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                for child in sorted(source.iterdir()):
                    tar.add(str(child), arcname=child.name, filter=_readable_by_all)
            filler = self.client.containers.create(self.image, command=["true"], user="0", labels=labels,
                                                   network_mode="none",
                                                   volumes={volume.name: {"bind": "/fill", "mode": "rw"}})
            try:
                if not self.client.api.put_archive(filler.id, "/fill", buffer.getvalue()):
                    raise SandboxError(f"cannot copy {host} to the Docker host")
            finally:
                filler.remove(force=True)
            mounts[volume.name] = {"bind": inside, "mode": "ro"}
        return mounts

    def _run(self, argv: Sequence[str], timeout_s: float, workdir: str | None, limit: int | None = None,
             stdin: bytes | None = None, env: dict[str, str] | None = None, user: str | None = None) -> RawResult:
        if stdin is not None:
            raise SandboxError("the docker backend takes no stdin: files go in with put_archive")
        if user is None:  # the agent's user: never root
            user, env = self.user, {**self.agent_env, **(env or {})}
        # The working folder is made first: an agent that ran `rm -rf /home/submission` still
        # gets a working sandbox (and an empty submission) rather than an exec that cannot start.
        folder = workdir or self.spec.submission_dir
        wrapped = ["timeout", "-k", "1", f"{timeout_s:.2f}",
                   "/bin/sh", "-c", 'mkdir -p -- "$0" && cd -- "$0" && exec "$@"', folder, *argv]
        api = self.client.api
        started = time.monotonic()
        out = OutputCap(limit or self.spec.max_output_bytes)
        err = OutputCap(self.spec.max_output_bytes)
        try:
            exec_id = api.exec_create(self.id, wrapped, stdout=True, stderr=True, workdir="/",
                                      environment=env or None, user=user)["Id"]
            for chunk_out, chunk_err in api.exec_start(exec_id, stream=True, demux=True):
                out.add(chunk_out)
                err.add(chunk_err)
            code = api.exec_inspect(exec_id).get("ExitCode")
            self._end_conmons(lambda conmon: conmon.session == exec_id, exec_id)
        except Exception as exc:  # the container was removed under us (cancel, wall clock) or the API died
            if self._closed:
                raise SandboxError("the sandbox was closed while the command ran") from None
            raise SandboxError(f"the Docker API failed: {type(exc).__name__}: {exc}") from None
        duration = time.monotonic() - started
        code = 137 if code is None else int(code)
        return code, out, err, code in TIMEOUT_CODES and duration >= timeout_s - 0.05, duration

    def _end_conmons(self, select: Callable[[Conmon], bool], naming: str) -> None:
        """podman keeps a finished exec session's conmon (two processes, ~1.6 MB) for
        exit_command_delay, 5 minutes by default, even past the container's removal: every
        command would leave a pair behind. The exit code is read by then, so end them."""
        if not self._reaps_conmons:
            return
        try:
            end_conmons(select, naming)
        except PermissionError:
            self._reaps_conmons = False
            log.warning("this worker may not end podman's conmon processes: each command's stay for the "
                        "engine's exit_command_delay (lower it in containers.conf)")

    def _put_tar(self, folder: str, data: bytes) -> None:
        """The engine writes as root wherever it is told, through any link: so it only drops the
        archive into INBOX, and the agent's user unpacks it with its own rights."""

        parcel, name = io.BytesIO(), f"{uuid.uuid4().hex}.tar"
        with tarfile.open(fileobj=parcel, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            info.uid, info.gid = self.owner
            tar.addfile(info, io.BytesIO(data))
        try:
            ok = self.client.api.put_archive(self.id, INBOX, parcel.getvalue())
        except docker.errors.APIError as exc:
            raise SandboxError(f"cannot write into {folder}: {exc.explanation or exc}") from None
        if not ok:
            raise SandboxError(f"cannot write into {folder}")
        unpack = 'mkdir -p -- "$1" && tar -xf "$2" -C "$1"; code=$?; rm -f -- "$2"; exit $code'
        code, _, err, _, _ = self._exec_raw(["/bin/sh", "-c", unpack, "put", folder, f"{INBOX}/{name}"], 600, "/")
        if code != 0:
            raise SandboxError(f"cannot write into {folder}: {err.text().strip()[-300:]}")

    def _git_shell(self, script: str, timeout_s: float = 120) -> tuple[int, bytes, bytes]:
        # Git's configuration only from GIT_DIR (root's alone) and GIT_IDENTITY: none from files
        # anyone else could write.
        env = {"GIT_DIR": GIT_DIR, "GIT_WORK_TREE": self.spec.submission_dir, "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_CONFIG_GLOBAL": "/dev/null", "HOME": "/root"}
        code, out, err, _, _ = self._exec_raw(["/bin/sh", "-c", script], timeout_s, "/", limit=1 << 30, env=env,
                                              user=ROOT)
        if code == 127:
            raise SandboxError(f"the image {self.image} lacks a program the snapshots need (git, find, xargs, "
                               f"chown): {err.data.decode(errors='replace').strip()[-300:]}")
        return code, out.data, err.data

    def _after_restore(self) -> None:
        uid, gid = self.owner
        # -R without -L: links are changed themselves, never followed out of the folder
        self._exec_raw(["chown", "-R", f"{uid}:{gid}", self.spec.submission_dir], 300, "/", user=ROOT)

    def _teardown(self) -> None:

        if self.container is not None:
            try:
                # force: kill and remove in one call (the same as docker rm -f)
                self.container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:
                log.warning("could not remove sandbox container %s; the sweep will", self.container.id,
                            exc_info=True)
            # sessions cut short (a cancel, the wall clock) whose exit code nobody read
            self._end_conmons(lambda conmon: conmon.of_exec and conmon.container == self.id, self.id)
        client = getattr(self, "client", None)  # absent when no Docker API answered
        if client is not None:
            for name in getattr(self, "volumes", []):
                try:
                    client.volumes.get(name).remove(force=True)
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError:
                    log.warning("could not remove sandbox volume %s; the sweep will", name, exc_info=True)
            client.close()

