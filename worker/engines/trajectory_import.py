"""Import a large trajectory file (uploaded or on the server) as a job: same service as the command."""

from __future__ import annotations

import shutil
from typing import Any

from apps.jobs.models import Job
from apps.papers.models import Paper
from apps.trajectories.services import ImportedTrajectory, import_trajectories
from worker.progress import Progress


def run(job: Job, progress: Progress) -> dict[str, Any]:
    config = job.config
    paper = Paper.objects.get(pk=config["paper"]) if config.get("paper") else None
    done = 0

    def report(imported: ImportedTrajectory) -> None:
        nonlocal done
        done += 1
        # The number of runs in a file is unknown until the end: report counts, not a fraction.
        progress.update(0.5, f"{done} trajectories imported (last: {imported.turns} turns)")
        progress.log(f"{imported.format}: id {imported.id}, {imported.turns} turns, {imported.source_name}")

    try:
        result = import_trajectories(
            config["path"], paper=paper, skip_bad=bool(config.get("skip_bad")), user=job.created_by,
            on_trajectory=report,
        )
    finally:
        if config.get("cleanup"):
            shutil.rmtree(config["cleanup"], ignore_errors=True)
    progress.update(1.0, f"{len(result.trajectories)} trajectories imported", force=True)
    return result.as_dict()
