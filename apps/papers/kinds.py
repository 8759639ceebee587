"""Paper jobs: a model drafts a rubric tree from a paper."""

from __future__ import annotations

from apps.jobs.registry import JobKind, register
from apps.papers.forms import RubricDraftConfigForm

register(JobKind(
    name="rubric_draft",
    label="Draft a rubric with a model",
    engine="worker.engines.rubric_draft.run",
    description="A model drafts a PaperBench rubric tree from a paper's Markdown (and its official code); "
    "refused trees go back with the validator's problems. Saved as the draft and a model-draft version, "
    "never over a curated rubric (docs/research-factory.md).",
    form=RubricDraftConfigForm,
))
