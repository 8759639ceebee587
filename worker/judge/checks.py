"""Programmatic leaves: a shell command run against the submission, exit status 0 = pass.

The command runs under bubblewrap: no network, its own process ids, the host read-only, and a
private copy of the submission at /tmp/submission (writable, thrown away after), so a check can
neither reach out nor change what the model judges see. Exact and cheap, for tests and toy tasks.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

OUTPUT_LIMIT = 4000


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


def sandbox_command(command: str, root: Path) -> list[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise FileNotFoundError("bubblewrap (bwrap) is not installed on this worker")
    return [
        bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
        "--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session",
        # Under the private /tmp: the host's root is read-only, so no new top-level folder.
        "--bind", str(root), "/tmp/submission", "--chdir", "/tmp/submission",
        "/bin/sh", "-c", command,
    ]


def run_check(command: str, submission: Path, timeout_s: float = 60.0) -> CheckResult:
    with tempfile.TemporaryDirectory(prefix="klong-check-") as scratch:
        root = Path(scratch) / "submission"
        shutil.copytree(submission, root, symlinks=True)
        try:
            done = subprocess.run(
                sandbox_command(command, root), capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL
            )
        except FileNotFoundError as exc:
            return CheckResult(False, None, "", f"cannot sandbox the check: {exc}")
        except subprocess.TimeoutExpired:
            return CheckResult(False, None, f"timed out after {timeout_s:g} s")
    output = (done.stdout + done.stderr).decode(errors="replace")
    if len(output) > OUTPUT_LIMIT:
        output = "…" + output[-OUTPUT_LIMIT:]
    return CheckResult(done.returncode == 0, done.returncode, output)
