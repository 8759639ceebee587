"""Operations jobs: proving a GPU worker takes work."""

from __future__ import annotations

from apps.jobs.registry import JobKind, register
from apps.ops.forms import GPUCheckForm

register(JobKind(
    name="gpu_check",
    label="GPU worker check",
    queue="gpu",
    engine="worker.engines.gpu_check.run",
    description="Runs on a GPU worker and reports its CUDA devices, memory, NCCL and each device's bf16 "
    "matmul TFLOP/s: proves a newly added GPU node takes gpu-queue work (docs/deploy.md).",
    form=GPUCheckForm,
    gpus=1,
    routed_by_gpus=True,
))
