"""What both backends share: submission snapshots in git, output caps, closing once.

The snapshot repository lives outside the submission folder (its GIT_DIR is elsewhere), so the
agent can neither see it as part of its submission nor rewrite its history. A backend supplies
``_git(args)`` (run git against that repository and the submission folder) and ``_teardown()``.
"""

from __future__ import annotations

import io
import logging
import shlex
import tarfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any

from worker.sandbox.spec import ExecResult, SandboxError, SandboxSpec

log = logging.getLogger(__name__)

UNCHANGED = "klong-snapshot-unchanged"
GIT_IDENTITY = [
    "-c", "user.name=KLong sandbox", "-c", "user.email=sandbox@klong.invalid", "-c", "commit.gpgsign=false",
    "-c", "core.autocrlf=false", "-c", "safe.directory=*", "-c", "gc.auto=0", "-c", "core.hooksPath=/dev/null",
]

GIT = ["git", *GIT_IDENTITY]


class OutputCap:
    """Collects a stream's first ``limit`` bytes and counts what it drops, so a command that
    prints gigabytes cannot fill the worker's memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.dropped = 0

    def add(self, chunk: bytes | None) -> None:
        if not chunk:
            return
        room = self.limit - self.size
        if room > 0:
            self.parts.append(chunk[:room])
            self.size += min(room, len(chunk))
        self.dropped += max(0, len(chunk) - max(room, 0))

    def drain(self, stream: IO[bytes]) -> None:
        while chunk := stream.read(65536):
            self.add(chunk)

    def drain_in_thread(self, stream: IO[bytes]) -> threading.Thread:
        thread = threading.Thread(target=self.drain, args=(stream,), daemon=True)
        thread.start()
        return thread

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)

    def text(self) -> str:
        text = self.data.decode("utf-8", errors="replace")
        if self.dropped:
            text += f"\n[... {self.dropped} more bytes of output dropped ...]"
        return text


# What a backend's _run returns: exit code, stdout, stderr, timed out, seconds.
RawResult = tuple[int, OutputCap, OutputCap, bool, float]


def _skip_unsafe(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    # The "data" filter, except that a member it refuses (a symlink out of the folder, a device)
    # is left out instead of failing the export: an agent must not be able to sabotage judging.
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError:
        log.warning("export: left out %s (it points outside the submission)", member.name)
        return None


def safe_extract(archive: bytes, dest: Path) -> None:
    """Unpack a tar into ``dest`` leaving out links out of it, device files and absolute paths."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter=_skip_unsafe)


class BaseSandbox:
    backend = "base"
    spec: SandboxSpec

    def __init__(self, spec: SandboxSpec) -> None:
        self.spec = spec
        self.opened_at = time.monotonic()
        self.base_commit: str | None = None
        self._closed = False
        self._close_lock = threading.Lock()
        self._lease: Any = None
        # (uid, gid) that files put into the sandbox belong to: the user commands run as
        self.owner: tuple[int, int] = (0, 0)

    # -- backend hooks -------------------------------------------------------------------
    def _run(self, argv: Sequence[str], timeout_s: float, workdir: str | None, limit: int | None = None,
             stdin: bytes | None = None, env: dict[str, str] | None = None, user: str | None = None) -> RawResult:
        """Run ``argv`` in the sandbox: (exit code, stdout, stderr, timed out, seconds). ``user``
        (docker): run as that user instead of the image's, e.g. root for the snapshots."""
        raise NotImplementedError

    def _put_tar(self, folder: str, data: bytes) -> None:
        """Unpack a tar archive into ``folder`` inside the sandbox (created if missing)."""
        raise NotImplementedError

    def _git_shell(self, script: str, timeout_s: float = 120) -> tuple[int, bytes, bytes]:
        """Run a shell script whose git commands see the snapshot repository (GIT_DIR) and the
        submission folder (GIT_WORK_TREE). One call per operation: on the docker backend each
        call is an exec round trip."""
        raise NotImplementedError

    def _teardown(self) -> None:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------
    def time_left(self) -> float:
        return self.spec.wall_clock_s - (time.monotonic() - self.opened_at)

    def _exec_raw(self, argv: Sequence[str], timeout_s: float, workdir: str | None = None, limit: int | None = None,
                  stdin: bytes | None = None, env: dict[str, str] | None = None, user: str | None = None,
                  ) -> RawResult:
        """``_run`` within the sandbox's wall clock: past it, the sandbox is removed."""
        if self._closed:
            raise SandboxError("the sandbox is closed")
        left = self.time_left()
        if left <= 0:
            self.close()
            err = OutputCap(200)
            err.add(b"sandbox wall-clock limit reached; the sandbox was removed")
            return 137, OutputCap(0), err, True, 0.0
        result = self._run(argv, max(0.1, min(timeout_s, left)), workdir, limit, stdin, env, user)
        if result[3] and self.time_left() <= 0:
            self.close()
        return result

    def exec(self, command: str, timeout_s: float = 60, workdir: str | None = None) -> ExecResult:
        code, out, err, timed_out, duration = self._exec_raw(["/bin/sh", "-c", command], timeout_s, workdir)
        return ExecResult(code, out.text(), err.text(), timed_out, duration, bool(out.dropped or err.dropped))

    def _inside(self, path: str) -> PurePosixPath:
        """A sandbox path; a relative one is in the submission folder."""
        return PurePosixPath(path if path.startswith("/") else f"{self.spec.submission_dir}/{path}")

    def write_file(self, path: str, data: bytes) -> None:
        # Unpacked inside the sandbox: a link the agent planted cannot lead a write to the host.
        target = self._inside(path)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(target.name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            info.uid, info.gid = self.owner
            tar.addfile(info, io.BytesIO(data))
        self._put_tar(str(target.parent), buffer.getvalue())

    def read_file(self, path: str, max_bytes: int | None = None) -> bytes:
        limit = max_bytes if max_bytes is not None else self.spec.max_output_bytes
        code, out, err, _, _ = self._exec_raw(
            ["/bin/sh", "-c", 'test -f "$1" && head -c "$2" -- "$1"', "read_file", str(self._inside(path)), str(limit)],
            120, "/", limit=limit + 1,
        )
        if code != 0:
            raise SandboxError(f"cannot read {path}: {err.text().strip()[-300:] or 'not a file'}")
        return out.data[:limit]

    def copy_in(self, host_path: Path, sandbox_path: str) -> None:
        """Copy a host file or folder to ``sandbox_path`` (e.g. a dataset, an official code folder)."""
        host_path, target = Path(host_path), self._inside(sandbox_path)
        if not host_path.exists():
            raise SandboxError(f"{host_path} does not exist")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(str(host_path), arcname=target.name, filter=self._owned)
        self._put_tar(str(target.parent), buffer.getvalue())

    def _owned(self, info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid = self.owner
        info.uname = info.gname = ""
        return info

    def copy_out(self, sandbox_path: str, dest: Path, max_bytes: int = 1 << 30, max_file_mb: int | None = None) -> Path:
        """Copy a file or folder out of the sandbox into the host folder ``dest``; returns the copy.
        Links out of it, devices and absolute paths are left out (the agent wrote it); with
        ``max_file_mb``, so are larger files (checkpoints, datasets), every folder still kept."""
        source = self._inside(sandbox_path)
        argv = ["tar", "-C", str(source.parent), "-cf", "-", "--", source.name]
        if max_file_mb is not None:
            # tar reads find's list and does not recurse on its own; -size -Nk is "under N KiB"
            argv = ["/bin/sh", "-c", 'cd "$1" && find "$2" \\( -type d -o -type l -o \\( -type f -size -"$3"k \\) \\) '
                    '-print0 | tar --null --no-recursion -T - -cf -', "copy-out", str(source.parent), source.name,
                    str(max_file_mb * 1024 + 1)]
        code, out, err, _, _ = self._exec_raw(argv, 600, "/", limit=max_bytes + 1)
        if code != 0:
            raise SandboxError(f"cannot copy {sandbox_path} out: {err.text().strip()[-300:]}")
        if out.dropped or out.size > max_bytes:
            raise SandboxError(f"{sandbox_path} is larger than {max_bytes} bytes")
        safe_extract(out.data, Path(dest))
        return Path(dest) / source.name

    def _git(self, args: Sequence[str], timeout_s: float = 120) -> tuple[int, bytes, bytes]:
        return self._git_shell(shlex.join([*GIT, *args]), timeout_s)

    def _git_ok(self, args: Sequence[str], what: str) -> bytes:
        code, out, err = self._git(args)
        if code != 0:
            raise SandboxError(f"{what} failed (git exit {code}): {err.decode(errors='replace')[-500:]}")
        return out

    def _commit_script(self, message: str, allow_empty: bool) -> str:
        git = shlex.join(GIT)
        empty = " --allow-empty" if allow_empty else ""
        commit = f"{git} commit --quiet{empty} --no-verify -m {shlex.quote(message[:2000] or 'snapshot')} >/dev/null"
        # Files over snapshot_max_file_mb (checkpoints, datasets) stay out of every snapshot: they
        # would make each commit slow and the history huge, and reproduce.sh regenerates them.
        # `add --force` so the agent's own .gitignore cannot hide files from the record.
        big = self.spec.snapshot_max_file_mb * 1024
        add = (f"find . -type f -size +{big}k -printf ':(exclude,literal)%P\\0' | "
               f"xargs -0 {git} add --all --force -- .")
        # The commit itself says whether anything changed (it refuses an empty one): one git
        # process fewer per snapshot than asking `diff --cached` first; a commit that failed with
        # changes staged is an error.
        return (f'mkdir -p "$GIT_WORK_TREE" && cd "$GIT_WORK_TREE" && {add} && '
                f"if {commit}; then {git} rev-parse HEAD; elif {git} diff --cached --quiet; then echo {UNCHANGED}; "
                f"else exit 1; fi")

    def _init_snapshots(self, before: str = "") -> None:
        """An empty first commit: every later snapshot is a change against a known state."""
        script = f"{before}{shlex.join([*GIT, 'init', '--quiet'])} && {self._commit_script('sandbox opened', True)}"
        self.base_commit = self._commit_from(self._git_shell(script), "initialising the snapshots")

    def _commit_from(self, answer: tuple[int, bytes, bytes], what: str) -> str | None:
        code, out, err = answer
        if code != 0:
            raise SandboxError(f"{what} failed (exit {code}): {err.decode(errors='replace')[-500:]}")
        text = out.decode().strip()
        return None if text == UNCHANGED else text

    def snapshot(self, message: str, *, allow_empty: bool = False) -> str | None:
        """Commit the submission folder as it is now; None when nothing changed since the last."""
        return self._commit_from(self._git_shell(self._commit_script(message, allow_empty)), "the snapshot")

    def _check_commit(self, commit: str) -> str:
        if not commit or not all(c in "0123456789abcdef" for c in commit.lower()):
            raise SandboxError(f"not a commit id: {commit!r}")
        code, out, _ = self._git(["rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"])
        if code != 0:
            raise SandboxError(f"no snapshot {commit} in this sandbox")
        return out.decode().strip()

    def restore(self, commit: str) -> None:
        """Put the submission folder back to a snapshot (history is kept: the next snapshot
        records the restored state as a new commit)."""
        commit = self._check_commit(commit)
        self._git_ok(["read-tree", "-u", "--reset", commit], "restoring the snapshot")
        self._git_ok(["clean", "-f", "-d", "-x", "-q"], "removing files the snapshot lacks")
        self._after_restore()

    def _after_restore(self) -> None:
        """Hand restored files back to the user commands run as (docker with a non-root image)."""

    def export_submission(self, dest: Path, commit: str | None = None) -> Path:
        """Write the submission at ``commit`` (None: as it is now) into the host folder ``dest``."""
        if commit is None:
            commit = self.snapshot("export") or "HEAD"
        dest = Path(dest)
        self.export_submissions({commit: dest})
        return dest

    def export_submissions(self, dest_of: dict[str, Path]) -> None:
        """Write several snapshots (commit -> host folder) at once: the states of a rollout's turns.

        One archive call for all of them: a rollout's three states cost one process (one exec
        round trip on the docker backend) instead of three checks, listings and archives each.
        Each folder is unpacked on its own, so a link in one snapshot cannot lead into another's.
        """
        for commit in dest_of:
            if commit != "HEAD" and not (commit and all(c in "0123456789abcdef" for c in commit.lower())):
                raise SandboxError(f"not a commit id: {commit!r}")
        if not dest_of:
            return
        git = shlex.join(GIT)
        # `c^{commit}` refuses a tree or a blob id: only a snapshot is a submission
        script = " && ".join(f"{git} archive --format=tar --prefix={c}/ {c}^{{commit}}" for c in dest_of)
        code, out, err = self._git_shell(script, 600)
        if code != 0:
            raise SandboxError(f"archiving the submission failed (git exit {code}): "
                               f"{err.decode(errors='replace').strip()[-500:]}")
        # the archives one after another: ignore_zeros reads past each one's end blocks
        with tarfile.open(fileobj=io.BytesIO(out), ignore_zeros=True) as tar:
            members: dict[str, list[tarfile.TarInfo]] = {commit: [] for commit in dest_of}
            for member in tar:
                commit, _, inside = member.name.partition("/")
                if commit in members and inside:  # not the prefix's own folder
                    members[commit].append(member)
            for commit, dest in dest_of.items():
                Path(dest).mkdir(parents=True, exist_ok=True)  # an empty snapshot is an empty folder
                cut = len(commit) + 1
                tar.extractall(Path(dest), members=members[commit],
                               filter=lambda m, d, cut=cut: _skip_unsafe(m.replace(name=m.name[cut:], deep=False), d))

    def close(self) -> None:
        """Kill everything and remove the sandbox; safe to call twice or from another thread."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._teardown()
        finally:
            if self._lease is not None:
                self._lease.release()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a sandbox forgotten by its caller still goes away
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass
