"""Launch form of the GPU worker check (the job kind ``gpu_check``)."""

from __future__ import annotations

from django import forms


class GPUCheckForm(forms.Form):
    matmul_seconds = forms.FloatField(
        min_value=0, max_value=60, initial=2.0, label="Matmul benchmark (s)",
        help_text="Seconds of bf16 matrix multiplies per visible GPU, to measure its TFLOP/s (0: skip).",
    )
    require_gpu = forms.BooleanField(
        required=False, initial=True,
        help_text="Fail when the worker sees no CUDA device (off: report what the worker has, e.g. a CPU test node).",
    )
