"""Import a large trajectory file (uploaded or on the server) as a job: same service as the command."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.jobs.models import Job
from apps.jobs.progress import Progress
from apps.ops.artifacts import discard_artifact, fetch_artifact
from apps.papers.models import Paper
from apps.trajectories.services import ImportedTrajectory, import_trajectories


def import_root() -> Path:
    """Where uploads wait for their import job; the job reads nothing outside it."""
    return (Path(settings.DATA_DIR) / "imports").resolve()


def run(job: Job, progress: Progress) -> dict[str, Any]:
    config = job.config
    path = Path(str(config.get("path", ""))).resolve()
    # A job config can come from the jobs API: never let it read arbitrary server files.
    if not path.is_relative_to(import_root()):
        raise ValueError(f"path must be inside {import_root()} (use manage.py import_trajectories for others)")
    if config.get("cleanup"):
        # Staged by the web server: on this machine already, or fetched from the media storage.
        fetch_artifact(Path(str(config["cleanup"])).resolve())
    paper = Paper.objects.get(pk=config["paper"]) if config.get("paper") else None
    done = 0

    def report(imported: ImportedTrajectory) -> None:
        nonlocal done
        done += 1
        # The number of runs in a file is unknown until the end: report counts, not a fraction.
        progress.update(0.5, f"{done} trajectories imported (last: {imported.turns} turns)")
        progress.log(f"{imported.format}: id {imported.id}, {imported.turns} turns, {imported.source_name}")
        for what in imported.clipped:
            progress.log(f"{imported.source_name}: cut to KLONG_MAX_TURN_CHARS: {what}")

    try:
        # One batch per job: a later attempt after a killed one discards what the killed one left hidden.
        result = import_trajectories(
            path, paper=paper, skip_bad=bool(config.get("skip_bad")), user=job.created_by,
            on_trajectory=report, batch=f"job-{job.pk}",
        )
    finally:
        cleanup = Path(str(config.get("cleanup") or "")).resolve()
        if config.get("cleanup") and cleanup.is_relative_to(import_root()) and cleanup != import_root():
            shutil.rmtree(cleanup, ignore_errors=True)
            discard_artifact(cleanup)
    progress.update(1.0, f"{len(result.trajectories)} trajectories imported", force=True)
    return result.as_dict()
