"""The reproduction step: run a submission's reproduce.sh in a fresh sandbox, keep what it left.

PaperBench grades the *executed* submission: the agent's folder is copied into a fresh
container, ``bash reproduce.sh`` runs there under a timeout with its output in reproduce.log,
and the judge reads the folder as the script left it (Result Analysis leaves see only outputs
written by that run). This is the same here, on any sandbox backend:

1. a fresh sandbox from the caller's spec (confined like every sandbox: no network unless the
   spec asks, its CPU, memory and process limits, GPUs on the docker backend when asked);
2. the submission copied in (file times kept, so files the agent wrote earlier stay older than
   the run), ``venv``/``.venv`` removed (links into the agent's sandbox, as PaperBench does);
3. ``bash reproduce.sh > reproduce.log 2>&1`` with the timeout; past it the whole process group
   is killed (the sandbox's per-command timeout);
4. the folder copied out to ``dest`` (files over ``max_file_mb`` left out: checkpoints and
   datasets are not graded), then a last line of ours appended to reproduce.log: the exit code
   and time, or that the run was killed at the timeout.

``started_at`` (epoch seconds, whole seconds down: tar keeps whole-second file times) goes to
the judge as ``reproduce_started_at``. No Django here.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from worker.sandbox import Sandbox, SandboxError, SandboxSpec, open_sandbox

SCRIPT = "reproduce.sh"
LOG = "reproduce.log"
# Time the sandbox needs beyond the script: opening, copying in and out.
OVERHEAD_S = 600.0


@dataclass(frozen=True)
class Reproduction:
    folder: str  # the reproduced submission on the host
    started_at: float  # epoch seconds (whole, rounded down) when reproduce.sh started
    duration_s: float
    exit_code: int | None  # None: no reproduce.sh, nothing ran
    timed_out: bool
    script_found: bool
    backend: str
    timeout_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def reproduce(submission: Path, dest: Path, spec: SandboxSpec, timeout_s: float, *,
              max_file_mb: int = 10, max_bytes: int = 1 << 30,
              on_open: Callable[[Sandbox], None] | None = None) -> Reproduction:
    """Run ``submission``'s reproduce.sh in a fresh sandbox made from ``spec``; the folder as the
    script left it lands in ``dest`` (which must not exist yet). Raises SandboxError when the
    sandbox cannot be opened (a backend missing, GPUs that cannot be given) or was closed under
    the run. ``on_open`` gets the sandbox as soon as it is open: a cancel watcher closes it."""
    submission, dest = Path(submission), Path(dest)
    if not submission.is_dir():
        raise SandboxError(f"submission folder not found: {submission}")
    if dest.exists():
        raise SandboxError(f"{dest} exists already: a reproduction writes a fresh folder")
    if timeout_s <= 0:
        raise SandboxError("the reproduction timeout must be positive")
    found = (submission / SCRIPT).is_file()
    spec = replace(spec, wall_clock_s=timeout_s + OVERHEAD_S)
    with open_sandbox(spec) as box:
        if on_open is not None:
            on_open(box)
        inside = spec.submission_dir
        box.copy_in(submission, inside)
        started = time.time()
        if found:
            result = box.exec(f"rm -rf venv .venv; bash {SCRIPT} > {LOG} 2>&1", timeout_s=timeout_s, workdir=inside)
            code: int | None = None if result.timed_out else result.exit_code
            timed_out, duration = result.timed_out, result.duration_s
        else:
            code, timed_out, duration = None, False, 0.0
        with tempfile.TemporaryDirectory(prefix="klong-reproduce-") as tmp:
            copy = box.copy_out(inside, Path(tmp), max_bytes=max_bytes, max_file_mb=max_file_mb)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(copy), dest)
        backend = box.backend
    with open(dest / LOG, "a", encoding="utf-8") as log:
        log.write("\n" + outcome_line(found, code, timed_out, duration, timeout_s) + "\n")
    return Reproduction(str(dest), float(math.floor(started)), duration, code, timed_out, found, backend, timeout_s)


def outcome_line(found: bool, code: int | None, timed_out: bool, duration_s: float, timeout_s: float) -> str:
    """The harness's own last line of reproduce.log (the judge reads the log's head and tail)."""
    if not found:
        return f"[klong reproduction] no {SCRIPT} in the submission: nothing was run"
    if timed_out:
        return (f"[klong reproduction] {SCRIPT} was killed after {timeout_s:g} s: it ran past the reproduction "
                "timeout; the files are as it left them")
    return f"[klong reproduction] {SCRIPT} exited with code {code} after {duration_s:.1f} s"
