"""The Celery queues, and the GPU queue of a job by how many GPUs it needs.

A job that needs k GPUs goes to a queue of its own: ``gpu`` for one, ``gpu-k`` for more. A worker
started with ``-Q gpu`` and ``KLONG_WORKER_GPUS=N`` also consumes ``gpu-2`` ... ``gpu-N``
(``GPUQueues`` in worker/lifecycle.py), so a job never lands on a worker with fewer cards than it
needs, and per-GPU workers (N = 1) and per-node workers (N = the node's cards) can share a fleet.
Pure: the web process imports it to route jobs.
"""

from __future__ import annotations

MAX_GPUS = 16  # per job; the largest nodes in common use have 8 or 16 cards


def gpu_queue(gpus: int) -> str:
    """The queue of a job that needs ``gpus`` GPUs (0: the cpu queue)."""
    if gpus <= 0:
        return "cpu"
    if gpus > MAX_GPUS:
        raise ValueError(f"A job may ask for at most {MAX_GPUS} GPUs (one worker's node), not {gpus}.")
    return "gpu" if gpus == 1 else f"gpu-{gpus}"


def gpu_queues_for_worker(gpus: int) -> list[str]:
    """Every GPU queue a worker with ``gpus`` cards can serve: jobs needing 1 to ``gpus`` GPUs."""
    return [gpu_queue(k) for k in range(1, min(gpus, MAX_GPUS) + 1)]


QUEUES: tuple[str, ...] = ("cpu", *gpu_queues_for_worker(MAX_GPUS), "judge")
