"""The bubblewrap backend: a sandbox on the worker's own machine, no container engine needed.

Each ``exec`` is one confined ``bwrap`` process (worker/sandbox/confine.py: the one policy it shares
with rubric checks): an unprivileged user in its own user namespace, no capabilities, only the
host's system folders, read-only; private writable /home, /tmp and submission folders (kept between
commands, in a host folder this sandbox owns), copies of the paper mounts read-only, no network
unless the spec asks, its own pid namespace, a clean environment (the worker's variables, API keys
among them, stay out), and the process, memory and file-size limits.

Limits: a wall-clock deadline for the sandbox, a timeout per command that kills the command's
whole process group (bwrap's --die-with-parent and the pid namespace take every descendant with
it), processes (spec.max_processes) and memory as RLIMIT_AS per process. bubblewrap has no CPU
quota or GPU isolation: use the docker backend where those matter (a spec asking for GPUs is refused).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from worker.sandbox.base import BaseSandbox, RawResult
from worker.sandbox.cleanup import deployment_id
from worker.sandbox.confine import (
    SANDBOX_PATH,
    Bind,
    Limits,
    ProcessGroups,
    as_sandbox_user,
    confined_argv,
    confined_env,
    hand_over,
    run_confined,
    tool,
)
from worker.sandbox.spec import SandboxError, SandboxSpec


def bwrap_prefix(job_id: int | None) -> str:
    return f"klong-bwrap-{deployment_id() or 'x'}-{job_id or 'x'}-"


class BwrapSandbox(BaseSandbox):
    backend = "bwrap"
    # A sandbox has started in this process, so bwrap works here: the probe runs once per process
    # (a pool opens thousands; a later failure still fails its own command).
    started: ClassVar[bool] = False

    def __init__(self, spec: SandboxSpec) -> None:
        super().__init__(spec)
        if spec.wants_gpus:
            # bubblewrap has no device cgroup: binding /dev/nvidia* would hand every sandbox all of
            # the machine's GPUs, with no count and no isolation between sandboxes.
            raise SandboxError("bubblewrap cannot give a sandbox GPUs (no device isolation): use the docker "
                               "backend on a host with the NVIDIA Container Toolkit")
        tool("bwrap")
        for host in spec.mounts_ro:
            if not os.path.exists(host):
                raise SandboxError(f"mount source {host} does not exist")
        # Named for the installation and the job, so a sweep can tell a dead worker's folder
        # (worker/sandbox/cleanup.py: sweep_bwrap_folders) from one still in use.
        self.root = Path(tempfile.mkdtemp(prefix=bwrap_prefix(spec.job_id)))
        self.submission = self.root / "submission"
        self.git_dir = self.root / "snapshots.git"
        self._groups = ProcessGroups()
        try:
            self._make_folders()
            if not BwrapSandbox.started:
                probe = self.exec("true", timeout_s=30)
                if probe.exit_code != 0:
                    raise SandboxError(f"bwrap cannot start a sandbox here: {probe.stderr.strip()[-500:]}")
                BwrapSandbox.started = True
            self._init_snapshots()
        except BaseException:
            self.close()
            raise

    def _make_folders(self) -> None:
        """The sandbox's writable folders and the snapshot history, owned by the user commands run
        as; the paper mounts as read-only copies (that user cannot reach a folder inside the data
        folder, and must not: a copy holds exactly what the spec names)."""
        for name in ("submission", "home", "tmp", "snapshots.git"):
            (self.root / name).mkdir()
        for index, host in enumerate(self.spec.mounts_ro):
            copy = self.root / "ro" / str(index)
            if os.path.isdir(host):
                shutil.copytree(host, copy, symlinks=True)
            else:
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(host, copy)
        hand_over(self.root)
        # Others may pass through the root (the unprivileged user reaches its folders) but not list it.
        self.root.chmod(0o711)

    def _argv(self, command: Sequence[str], workdir: str | None) -> list[str]:
        spec = self.spec
        binds = [Bind(str(self.root / "tmp"), "/tmp", writable=True), Bind(str(self.root / "home"), "/home", writable=True),
                 Bind(str(self.submission), spec.submission_dir, writable=True)]
        binds += [Bind(str(self.root / "ro" / str(index)), inside) for index, inside in enumerate(spec.mounts_ro.values())]
        limits = Limits(max_processes=spec.max_processes, memory_bytes=spec.memory_mb * 1024 * 1024)
        return confined_argv(command, binds=binds, workdir=workdir or spec.submission_dir, limits=limits,
                             network=spec.network)

    def _run(self, argv: Sequence[str], timeout_s: float, workdir: str | None, limit: int | None = None,
             stdin: bytes | None = None, env: dict[str, str] | None = None, user: str | None = None) -> RawResult:
        # one user here (the sandbox's); ``user`` is for docker images with USER
        return run_confined(
            self._argv(argv, workdir), env=confined_env("/home", {"SUBMISSION_DIR": self.spec.submission_dir, **(env or {})}),
            timeout_s=timeout_s, out_limit=limit or self.spec.max_output_bytes, err_limit=self.spec.max_output_bytes,
            stdin=stdin, groups=self._groups,
        )

    def _put_tar(self, folder: str, data: bytes) -> None:
        code, _, err, _, _ = self._exec_raw(
            ["/bin/sh", "-c", 'mkdir -p -- "$1" && tar -C "$1" -xof -', "put", folder], 300, "/", stdin=data
        )
        if code != 0:
            raise SandboxError(f"cannot write into {folder}: {err.text().strip()[-300:]}")

    def _git_shell(self, script: str, timeout_s: float = 120) -> tuple[int, bytes, bytes]:
        # On the host, against this sandbox's own folders, as the sandbox's user (the files it
        # restores stay the agent's; root never works on what the agent wrote); git never reads
        # the agent's config.
        env = {"PATH": SANDBOX_PATH, "HOME": str(self.root), "GIT_DIR": str(self.git_dir),
               "GIT_WORK_TREE": str(self.submission), "GIT_CONFIG_NOSYSTEM": "1", "LANG": "C"}
        try:
            done = subprocess.run([*as_sandbox_user(), "/bin/sh", "-c", script], cwd=self.submission, env=env, capture_output=True,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return 124, b"", b"git timed out"
        return done.returncode, done.stdout, done.stderr

    def _teardown(self) -> None:
        self._groups.kill_all()
        shutil.rmtree(self.root, ignore_errors=True)
