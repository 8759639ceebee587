"""A short job that exercises every moving part: queue, worker, database, live events."""

from __future__ import annotations

import math
import platform
import socket
import time
from typing import Any

from apps.jobs.models import Job
from worker.progress import Progress


def run(job: Job, progress: Progress) -> dict[str, Any]:
    steps = int(job.config.get("steps", 5))
    delay = float(job.config.get("delay_s", 0.05))
    if not 1 <= steps <= 1000:
        raise ValueError(f"steps must be between 1 and 1000, got {steps}")
    progress.log(f"Self-test: {steps} steps on {socket.gethostname()}")
    for step in range(1, steps + 1):
        time.sleep(delay)
        # A decaying curve, so the live plot on the job page has something to draw.
        progress.metric(step, loss=round(2.0 * math.exp(-step / max(steps / 3, 1)), 6))
        progress.update(step / steps, f"step {step} of {steps}", force=step == steps)
    return {
        "echo": job.config.get("echo", "pong"),
        "steps": steps,
        "host": socket.gethostname(),
        "python": platform.python_version(),
    }
