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
