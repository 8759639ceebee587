"""One confinement policy for hostile commands run on a worker's own machine: the agent's commands
in a bubblewrap sandbox and the curators' programmatic rubric checks. Both build their command line
here, so one set of tests (tests/sandbox/test_confinement.py) covers both.

What a confined command gets:
- **An unprivileged user.** When the worker runs as root, bubblewrap itself is started as
  KLONG_SANDBOX_UID (default 65534, nobody) through ``setpriv``, then maps that uid into a new user
  namespace. Not root outside the namespace matters twice: files root owns (the secret key, the
  SQLite database, /etc/shadow) stay unreadable even where a path leaked in, and the kernel does not
  enforce a process limit on root's processes.
- **No capabilities, no new privileges, no nested user namespaces**, its own pid, ipc, uts and
  network namespaces: no network (unless the caller asks), and no abstract unix sockets of the host.
- **Only the system folders**, read-only (/usr, /etc and the /bin, /lib links; plus
  KLONG_SANDBOX_RO_PATHS). Everything else of the host is simply absent: the checkout, the data,
  media and static folders, /tmp and /run (PostgreSQL's, Redis's and podman's sockets), /home, /root.
  A few files root can read anyway are masked (/etc/shadow...). The root of the sandbox is remounted
  read-only, so nothing can be written outside the caller's writable folders.
- **Limits** (``Limits``), set with prlimit inside the namespace: processes (a fork bomb stops there;
  counted per sandbox, since each has its own user namespace), address space per process, CPU
  seconds per process, the largest file, open files, no core dumps; a sized tmpfs for /tmp. The
  caller adds the wall-clock timeout and caps the output it reads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from worker.sandbox.base import OutputCap, RawResult
from worker.sandbox.spec import SandboxError, sandbox_uid

# The host folders a confined command sees, read-only; links among them (/bin -> usr/bin on merged-/usr
# systems) are recreated as links.
SYSTEM_FOLDERS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# Files under /etc that hold secrets or say who may become root: shown empty.
MASKED_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers")
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_processes: int = 256
    memory_bytes: int = 2048 * MiB  # address space of each process
    cpu_s: int | None = None  # CPU seconds of each process (None: only the caller's wall clock)
    file_bytes: int = 4096 * MiB  # the largest file a command may write
    open_files: int = 1024
    tmp_bytes: int | None = None  # a private tmpfs of this size at /tmp (None: the caller binds /tmp)


@dataclass(frozen=True)
class Bind:
    host: str
    inside: str
    writable: bool = False


def extra_system_folders() -> list[str]:
    """KLONG_SANDBOX_RO_PATHS: more host folders sandboxes may read (comma-separated, e.g. /opt/conda)."""
    return [p.strip() for p in os.environ.get("KLONG_SANDBOX_RO_PATHS", "").split(",") if p.strip()]


def hidden_folders() -> list[str]:
    """Folders inside the visible ones that must stay hidden anyway: KLONG_BWRAP_HIDE (comma-separated)."""
    return [p.strip() for p in os.environ.get("KLONG_BWRAP_HIDE", "").split(",") if p.strip()]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        what, package = ("bubblewrap (bwrap)", "bubblewrap") if name == "bwrap" else (name, "util-linux")
        raise SandboxError(f"{what} is not installed on this worker (apt-get install {package})")
    return path


def runs_as() -> int | None:
    """The uid bubblewrap is started as, or None when the worker is not root (it then runs as the
    worker's own user, which must own nothing secret: docs/security.md)."""
    return sandbox_uid() if os.geteuid() == 0 else None


def as_sandbox_user() -> list[str]:
    """The prefix that starts a command as the sandbox's user, without capabilities or a way to
    gain privileges (empty when the worker is not root: it already is that user)."""
    uid = runs_as()
    if uid is None:
        return []
    return [tool("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--no-new-privs",
            "--"]


def hand_over(path: Path) -> None:
    """Give a folder tree the worker made to the user confined commands run as (root only; links
    themselves, never what they point to)."""
    uid = runs_as()
    if uid is None:
        return
    os.chown(path, uid, uid, follow_symlinks=False)
    for folder, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(folder, name), uid, uid, follow_symlinks=False)


def _system_view() -> list[str]:
    argv: list[str] = []
    for folder in [*SYSTEM_FOLDERS, *extra_system_folders()]:
        if os.path.islink(folder):
            argv += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder):
            argv += ["--ro-bind", folder, folder]
    for folder in hidden_folders():
        if os.path.isdir(folder) and not os.path.islink(folder):
            argv += ["--tmpfs", folder]
    for path in MASKED_FILES:
        if os.path.isfile(path):
            argv += ["--ro-bind", "/dev/null", path]
    return argv


def _limits(limits: Limits) -> list[str]:
    # prlimit runs inside the namespaces, so the process count is this sandbox's own.
    argv = [
        tool("prlimit"), f"--nproc={limits.max_processes}", f"--as={limits.memory_bytes}",
        f"--fsize={limits.file_bytes}", f"--nofile={limits.open_files}", "--core=0",
    ]
    if limits.cpu_s is not None:
        argv.append(f"--cpu={limits.cpu_s}")
    return [*argv, "--"]


def confined_argv(command: Sequence[str], *, binds: Sequence[Bind], workdir: str, limits: Limits,
                  network: bool = False) -> list[str]:
    """The command line that runs ``command`` confined; run it with ``confined_env()`` and
    ``start_new_session=True`` so a timeout can kill the whole group."""
    uid = runs_as()
    inside = str(uid if uid is not None else os.geteuid())
    argv = [
        tool("bwrap"), "--die-with-parent", "--new-session", "--unshare-all", "--unshare-user", "--disable-userns",
        "--uid", inside, "--gid", inside, "--cap-drop", "ALL", "--hostname", "sandbox",
    ]
    if network:
        argv.append("--share-net")
    argv += [*_system_view(), "--dev", "/dev", "--proc", "/proc"]
    if limits.tmp_bytes is not None:
        argv += ["--size", str(limits.tmp_bytes), "--tmpfs", "/tmp"]
    for bind in binds:
        argv += ["--bind" if bind.writable else "--ro-bind", bind.host, bind.inside]
    argv += ["--remount-ro", "/", "--chdir", workdir]
    return [*as_sandbox_user(), *argv, "--", *_limits(limits), *command]


def confined_env(home: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment: the worker's own variables (API keys, DATABASE_URL) never reach inside."""
    return {"PATH": SANDBOX_PATH, "HOME": home, "LANG": "C.UTF-8", "TMPDIR": "/tmp", **(extra or {})}


class ProcessGroups:
    """The process groups of confined commands still running, so a sandbox closing (or its wall
    clock running out) can kill them all from another thread."""

    def __init__(self) -> None:
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def add(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(proc)

    def discard(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def kill_all(self) -> None:
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            kill_group(proc)


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_confined(argv: Sequence[str], *, env: dict[str, str], timeout_s: float, out_limit: int, err_limit: int,
                 stdin: bytes | None = None, groups: ProcessGroups | None = None) -> RawResult:
    """Run a ``confined_argv`` command line: its output read while it runs and capped (the rest is
    counted, not kept), its whole process group killed at the timeout."""
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=env, start_new_session=True, close_fds=True,
    )
    if groups is not None:
        groups.add(proc)
    out, err = OutputCap(out_limit), OutputCap(err_limit)
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
        kill_group(proc)
        proc.wait()
    finally:
        if groups is not None:
            groups.discard(proc)
    for reader in readers:
        reader.join(timeout=5)
    code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
    return code, out, err, timed_out, time.monotonic() - started
