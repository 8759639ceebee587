"""GPU worker check: a job on a GPU queue (``gpu``, or ``gpu-N`` with ``gpus``: N) that reports
what the worker that took it can use.

Run it after adding a GPU node: it proves the node consumes the gpu queue, sees the devices it
was given (``CUDA_VISIBLE_DEVICES``), can reach the database and the live page, and measures each
device's matrix-multiply throughput, so a misconfigured card shows up before a training job does.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import torch

from apps.jobs.models import Job
from apps.jobs.progress import Progress

MATMUL_SIZE = 4096


def _tflops(device: str, seconds: float) -> float:

    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device, dtype=torch.bfloat16)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device, dtype=torch.bfloat16)
    torch.matmul(a, b)  # warm-up: kernel selection
    torch.cuda.synchronize(device)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(10):
            torch.matmul(a, b)
        torch.cuda.synchronize(device)
        done += 10
    return 2 * MATMUL_SIZE**3 * done / (time.perf_counter() - started) / 1e12


def run(job: Job, progress: Progress) -> dict[str, Any]:

    config = job.config
    seconds = float(config.get("matmul_seconds", 2.0))
    devices = []
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    progress.log(f"{job.worker} on {socket.gethostname()}: {count} CUDA device(s), "
                 f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}")
    if count == 0 and config.get("require_gpu", True):
        raise RuntimeError(
            f"No CUDA device is visible to worker {job.worker}: check the driver, the container's GPU "
            "access (--gpus / nvidia.com/gpu) and CUDA_VISIBLE_DEVICES."
        )
    wanted = int(config.get("gpus", 1))
    if 0 < count < wanted:
        raise RuntimeError(f"The check came through the queue of {wanted}-GPU jobs; worker {job.worker} sees "
                           f"{count}: set KLONG_WORKER_GPUS to the cards it really has (docs/deploy.md).")
    progress.set_total(max(count, 1))
    for index in range(count):
        props = torch.cuda.get_device_properties(index)
        info = {"index": index, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)}
        if seconds > 0:
            info["bf16_matmul_tflops"] = round(_tflops(f"cuda:{index}", seconds), 1)
            progress.metric(index + 1, bf16_matmul_tflops=info["bf16_matmul_tflops"])
        progress.log(f"GPU {index}: {info}")
        devices.append(info)
        progress.update((index + 1) / count, f"GPU {index + 1} of {count}", step=index + 1, force=True)
    return {
        "worker": job.worker,
        "host": socket.gethostname(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "nccl": torch.distributed.is_nccl_available() if torch.distributed.is_available() else False,
        "gpus": devices,
    }
