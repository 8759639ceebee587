"""Launch form of the GPU worker check (the job kind ``gpu_check``)."""

from __future__ import annotations

from django import forms

from apps.jobs.queues import MAX_GPUS


class GPUCheckForm(forms.Form):
    matmul_seconds = forms.FloatField(
        min_value=0, max_value=60, initial=2.0, label="Matmul benchmark (s)",
        help_text="Seconds of bf16 matrix multiplies per visible GPU, to measure its TFLOP/s (0: skip).",
    )
    gpus = forms.IntegerField(
        min_value=1, max_value=MAX_GPUS, initial=1, label="GPUs",
        help_text="Check a worker that takes jobs needing this many GPUs (the gpu-N queue): it must see as many.",
    )
    require_gpu = forms.BooleanField(
        required=False, initial=True,
        help_text="Fail when the worker sees no CUDA device (off: report what the worker has, e.g. a CPU test node).",
    )
