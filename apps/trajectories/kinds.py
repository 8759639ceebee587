"""Trajectory jobs: importing a large file, counting tokens again."""

from __future__ import annotations

from apps.jobs.registry import JobKind, register

register(JobKind(
    name="trajectory_import",
    label="Import trajectories",
    engine="worker.engines.trajectory_import.run",
    description="Imports a large trajectory file and counts its tokens (the same service as "
    "`manage.py import_trajectories`); config: path, paper (id), skip_bad.",
))

register(JobKind(
    name="trajectory_tokens",
    label="Count trajectory tokens",
    engine="worker.engines.trajectory_tokens.run",
    description="Counts every turn again with the configured tokenizer (KLONG_TOKENIZER_PATH); config: "
    "trajectories (ids), or none for every trajectory counted with another tokenizer or estimated.",
))

# Launched from the trajectory list or split page, or POST /api/trajectories/export-dataset/;
# the zip is the job's downloadable artifact.
register(JobKind(
    name="dataset_export",
    label="Export a training dataset",
    engine="worker.engines.dataset_export.run",
    description="Splits the chosen trajectories into training windows and renders each in the tokenizer's "
    "chat format (input_ids + labels) into a zip offered for download on the job page; config: ids (in "
    "export order) and the split options (l_max, ...). Launched from the trajectory list or split page, or "
    "POST /api/trajectories/export-dataset/ (docs/trajectories.md).",
))
