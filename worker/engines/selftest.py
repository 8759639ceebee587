"""A short job that exercises every moving part: queue, worker, database, live events."""

from __future__ import annotations

import math
import platform
import socket
import time
from typing import Any

from apps.jobs.models import Job
from apps.jobs.progress import Progress


def run(job: Job, progress: Progress) -> dict[str, Any]:
    steps = int(job.config.get("steps", 5))
    delay = float(job.config.get("delay_s", 0.05))
    fail_at = job.config.get("fail_at_step")
    if not 1 <= steps <= 1000:
        raise ValueError(f"steps must be between 1 and 1000, got {steps}")
    # A resumed run (after its worker died) starts after the last checkpointed step.
    done = int(job.checkpoint.get("step", 0))
    if done:
        progress.log(f"Resuming after step {done} (attempt {job.attempt})")
    else:
        progress.log(f"Self-test: {steps} steps on {socket.gethostname()}")
    progress.set_total(steps)
    for step in range(done + 1, steps + 1):
        time.sleep(delay)
        if fail_at and step == fail_at:
            raise RuntimeError(f"failed on purpose at step {step}")
        # A decaying curve, so the live plot on the job page has something to draw.
        progress.metric(step, loss=round(2.0 * math.exp(-step / max(steps / 3, 1)), 6))
        progress.checkpoint({"step": step})
        progress.update(step / steps, f"step {step} of {steps}", step=step, force=step == steps)
    return {
        "echo": job.config.get("echo", "pong"),
        "steps": steps,
        "host": socket.gethostname(),
        "python": platform.python_version(),
    }
