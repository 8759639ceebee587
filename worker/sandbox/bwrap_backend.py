"""The bubblewrap backend: a sandbox on the worker's own machine, no container engine needed.

Each ``exec`` is one ``bwrap`` process: the host's root filesystem read-only, private writable
/home, /tmp and submission folders (kept between commands, in a host folder this sandbox owns),
the paper mounts read-only, no network (``--unshare-all``) unless the spec asks, its own pid
namespace, and a clean environment (the worker's variables, API keys among them, stay out).

Places where the host keeps sockets or secrets are hidden under empty tmpfs: a unix socket is
not stopped by a network namespace, and /run holds PostgreSQL's, /tmp podman's.

Limits: a wall-clock deadline for the sandbox, a timeout per command that kills the command's
whole process group (bwrap's --die-with-parent and the pid namespace take every descendant with
it), and memory as RLIMIT_AS. bubblewrap has no CPU quota or GPU isolation: use the docker
backend where those matter.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from worker.sandbox import SandboxError, SandboxSpec
from worker.sandbox.base import BaseSandbox, OutputCap, RawResult

HIDDEN = ("/root", "/run", "/tmp", "/var/tmp", "/home", "/srv", "/mnt", "/media")
# Files uid 0 could still read without capabilities (it owns them): shown empty.
MASKED_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers")
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"


def bwrap_prefix(job_id: int | None) -> str:
    from worker.sandbox.cleanup import deployment_id

    return f"klong-bwrap-{deployment_id() or 'x'}-{job_id or 'x'}-"


def hidden_paths() -> list[str]:
    """HIDDEN plus KLONG_BWRAP_HIDE (comma-separated, e.g. the data folder), those that exist."""
    extra = [p.strip() for p in os.environ.get("KLONG_BWRAP_HIDE", "").split(",") if p.strip()]
    return [p for p in (*HIDDEN, *extra) if os.path.isdir(p) and not os.path.islink(p)]


class BwrapSandbox(BaseSandbox):
    backend = "bwrap"

    def __init__(self, spec: SandboxSpec) -> None:
        super().__init__(spec)
        self.bwrap = shutil.which("bwrap")
        self.prlimit = shutil.which("prlimit")
        if self.bwrap is None:
            raise SandboxError("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
        for host in spec.mounts_ro:
            if not os.path.exists(host):
                raise SandboxError(f"mount source {host} does not exist")
        # Named for the installation and the job, so a sweep can tell a dead worker's folder
        # (worker/sandbox/cleanup.py: sweep_bwrap_folders) from one still in use.
        self.root = Path(tempfile.mkdtemp(prefix=bwrap_prefix(spec.job_id)))
        self.submission = self.root / "submission"
        self.git_dir = self.root / "snapshots.git"
        for name in ("submission", "home", "tmp"):
            (self.root / name).mkdir()
        self._procs: set[subprocess.Popen] = set()
        self._procs_lock = threading.Lock()
        try:
            probe = self.exec("true", timeout_s=30)
            if probe.exit_code != 0:
                raise SandboxError(f"bwrap cannot start a sandbox here: {probe.stderr.strip()[-500:]}")
            self._init_snapshots()
        except BaseException:
            self.close()
            raise

    def _argv(self, command: Sequence[str], workdir: str | None) -> list[str]:
        spec = self.spec
        # --cap-drop ALL: bwrap started by root keeps root's capabilities otherwise (mknod a disk,
        # load a module); the command stays uid 0 over its own files, with no power beyond them.
        argv = [self.bwrap, "--die-with-parent", "--new-session", "--unshare-all", "--cap-drop", "ALL"]
        if spec.network:
            argv.append("--share-net")
        argv += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        for path in hidden_paths():
            argv += ["--tmpfs", path]
        for path in MASKED_FILES:
            if os.path.isfile(path):
                argv += ["--ro-bind", "/dev/null", path]
        argv += ["--bind", str(self.root / "tmp"), "/tmp", "--bind", str(self.root / "home"), "/home"]
        argv += ["--bind", str(self.submission), spec.submission_dir]
        for host, inside in spec.mounts_ro.items():
            argv += ["--ro-bind", host, inside]
        argv += ["--chdir", workdir or spec.submission_dir]
        return [*argv, "--", *command]

    def _env(self) -> dict[str, str]:
        return {"PATH": SANDBOX_PATH, "HOME": "/home", "LANG": "C.UTF-8", "TMPDIR": "/tmp",
                "SUBMISSION_DIR": self.spec.submission_dir}

    def _limits(self) -> list[str]:
        # Memory as address space, inherited by every descendant. prlimit rather than a
        # preexec_fn: forking with a Python callback is unsafe in a threaded worker.
        limit = self.spec.memory_mb * 1024 * 1024
        return [self.prlimit, f"--as={limit}", "--core=0", "--"] if self.prlimit else []

    def _run(self, argv: Sequence[str], timeout_s: float, workdir: str | None, limit: int | None = None,
             stdin: bytes | None = None, env: dict[str, str] | None = None, user: str | None = None) -> RawResult:
        # one user here (uid 0 without capabilities); ``user`` is for docker images with USER
        started = time.monotonic()
        proc = subprocess.Popen(
            [*self._limits(), *self._argv(argv, workdir)], stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**self._env(), **(env or {})},
            start_new_session=True, close_fds=True,
        )
        with self._procs_lock:
            self._procs.add(proc)
        out, err = OutputCap(limit or self.spec.max_output_bytes), OutputCap(self.spec.max_output_bytes)
        readers = [out.drain_in_thread(proc.stdout), err.drain_in_thread(proc.stderr)]
        if stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(stdin)
            proc.stdin.close()
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            proc.wait()
        finally:
            with self._procs_lock:
                self._procs.discard(proc)
        for reader in readers:
            reader.join(timeout=5)
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        return code, out, err, timed_out, time.monotonic() - started

    def _put_tar(self, folder: str, data: bytes) -> None:
        code, _, err, _, _ = self._exec_raw(
            ["/bin/sh", "-c", 'mkdir -p -- "$1" && tar -C "$1" -xof -', "put", folder], 300, "/", stdin=data
        )
        if code != 0:
            raise SandboxError(f"cannot write into {folder}: {err.text().strip()[-300:]}")

    def _git_shell(self, script: str, timeout_s: float = 120) -> tuple[int, bytes, bytes]:
        # On the host, against this sandbox's own folders: git never reads the agent's config.
        env = {"PATH": SANDBOX_PATH, "HOME": str(self.root), "GIT_DIR": str(self.git_dir),
               "GIT_WORK_TREE": str(self.submission), "GIT_CONFIG_NOSYSTEM": "1", "LANG": "C"}
        try:
            done = subprocess.run(["/bin/sh", "-c", script], cwd=self.submission, env=env, capture_output=True,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return 124, b"", b"git timed out"
        return done.returncode, done.stdout, done.stderr

    def _teardown(self) -> None:
        with self._procs_lock:
            procs = list(self._procs)
        for proc in procs:
            _kill_group(proc)
        shutil.rmtree(self.root, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
