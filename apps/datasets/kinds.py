"""Dataset jobs: Research-Factory distillation by rejection sampling."""

from __future__ import annotations

from apps.datasets.forms import DistillConfigForm
from apps.jobs.registry import JobKind, register

register(JobKind(
    name="distill",
    label="Research-Factory distillation",
    engine="worker.engines.distill.run",
    description="N teacher agent runs per train paper in sandboxes, each final submission judged through the "
    "judge queue; runs scoring at least the threshold (or the top-k per paper) are kept: rejection sampling. "
    "The kept trajectories form a named dataset for SFT (docs/research-factory.md).",
    form=DistillConfigForm,
    uses_sandboxes=True,
    partial="datasets/_distill_summary.html",
    scripts=("js/score-histogram.js",),
))
