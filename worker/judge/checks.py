"""Programmatic leaves: a shell command run against the submission, exit status 0 = pass.

A check's command is written by a curator and reads what an agent wrote: both are untrusted. It
runs under the one confinement policy the agent's own sandbox uses (worker/sandbox/confine.py): an
unprivileged user in its own user namespace, no capabilities, no network, only the host's system
folders (read-only), limits on processes, memory, CPU time, file and output size, and a maximum
timeout. Its only writable place is a private copy of the submission at /tmp/submission, inside a
sized tmpfs that is thrown away after, so a check can neither reach out nor change what the model
judges see. Exact and cheap, for tests and toy tasks.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from worker.sandbox import SandboxError
from worker.sandbox.confine import Bind, Limits, MiB, confined_argv, confined_env, hand_over, run_confined

OUTPUT_LIMIT = 4000  # characters of output kept in the leaf's explanation
READ_LIMIT = 64 * 1024  # bytes of each stream read from the check; the rest is counted and dropped
WORKDIR = "/tmp/submission"
# Copies the staged submission into the tmpfs; 125 (and the marker) says the copy, not the check, failed.
COPY_FAILED = "klong: the submission does not fit in the check's private copy"
_PREPARE = (
    f'mkdir -p {WORKDIR} && cp -R -p /.submission/. {WORKDIR}/ '
    f'|| {{ echo "{COPY_FAILED}" >&2; exit 125; }}; cd {WORKDIR} && exec /bin/sh -c "$1"'
)


def check_limits(timeout_s: float) -> Limits:
    """The confinement of one check (settings KLONG_CHECK_*, docs/security.md)."""
    return Limits(
        max_processes=settings.KLONG_CHECK_MAX_PROCESSES,
        memory_bytes=settings.KLONG_CHECK_MEMORY_MB * MiB,
        cpu_s=max(1, int(timeout_s) + 1),
        file_bytes=settings.KLONG_CHECK_TMP_MB * MiB,
        open_files=256,
        tmp_bytes=settings.KLONG_CHECK_TMP_MB * MiB,
    )


@dataclass(frozen=True, slots=True)
class CheckResult:
    passed: bool
    exit_code: int | None
    output: str
    error: str = ""  # set when the check could not run at all: the leaf is then invalid

    @property
    def explanation(self) -> str:
        verdict = "passed" if self.passed else "failed"
        return f"Programmatic check {verdict} (exit status {self.exit_code}).\n{self.output}".strip()


def sandbox_command(command: str, staged: Path, timeout_s: float) -> list[str]:
    """The confined command line: the staged submission read-only at /.submission, copied into the
    private tmpfs, then the check's command in the copy."""
    return confined_argv(
        ["/bin/sh", "-c", _PREPARE, "check", command], binds=[Bind(str(staged), "/.submission")], workdir="/tmp",
        limits=check_limits(timeout_s),
    )


def run_check(command: str, submission: Path, timeout_s: float = 60.0) -> CheckResult:
    # A row saved with a longer timeout (before the maximum existed) is cut to it.
    timeout_s = min(timeout_s, settings.KLONG_CHECK_MAX_TIMEOUT_S)
    scratch = Path(tempfile.mkdtemp(prefix="klong-check-"))
    try:
        staged = scratch / "submission"
        # A copy the sandbox's user may read whatever the stored files' owners and modes.
        shutil.copytree(submission, staged, symlinks=True)
        hand_over(staged)
        scratch.chmod(0o711)
        argv = sandbox_command(command, staged, timeout_s)
        code, out, err, timed_out, _ = run_confined(
            argv, env=confined_env("/tmp"), timeout_s=timeout_s, out_limit=READ_LIMIT, err_limit=READ_LIMIT
        )
    except SandboxError as exc:
        return CheckResult(False, None, "", f"cannot sandbox the check: {exc}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if timed_out:
        return CheckResult(False, None, f"timed out after {timeout_s:g} s")
    if code == 125 and COPY_FAILED in err.text():
        limit = check_limits(timeout_s).tmp_bytes // MiB
        return CheckResult(False, None, "", f"the submission does not fit in the check's {limit} MiB private copy "
                                            "(KLONG_CHECK_TMP_MB)")
    output = out.text() + err.text()
    if len(output) > OUTPUT_LIMIT:
        output = "…" + output[-OUTPUT_LIMIT:]
    return CheckResult(code == 0, code, output)
