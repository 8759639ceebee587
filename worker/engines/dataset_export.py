"""Render a training dataset zip for download: the job behind the export page and
``POST /api/trajectories/export-dataset/`` (apps/trajectories/exports.py checks and queues it).

Config: ``ids`` (the trajectories, in export order) and the split options (l_max, ...). The zip is
written to a partial file and renamed when complete, so a download never gets half an export; it is
recorded as the job's ``dataset`` artifact, which the job page offers for download.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.jobs.downloads import job_download_folder
from apps.jobs.models import Job
from apps.jobs.progress import Progress
from apps.ops.artifacts import publish_artifact
from apps.trajectories.split_service import DATASET_FILE, ExportError, exported_trajectories, write_dataset


def run(job: Job, progress: Progress) -> dict[str, Any]:
    ids = job.config.get("ids")
    # The config can come from the jobs API too: check its shape, not only the export page's.
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ExportError("config.ids must be a non-empty list of trajectory ids.")
    # Each attempt starts afresh: what an earlier, interrupted attempt left is not this export.
    folder = job_download_folder(job.pk)
    shutil.rmtree(folder, ignore_errors=True)
    job.artifacts.all().delete()
    folder.mkdir(parents=True)
    target = folder / DATASET_FILE
    progress.set_total(len(ids), "rendering windows")

    def report(done: int, windows: int) -> None:
        progress.update(done / len(ids), f"{done} of {len(ids)} trajectories, {windows:,} windows", step=done)

    # One partial file per attempt: a runner presumed dead never writes into its successor's file.
    partial = target.with_name(f".{target.name}.{job.attempt}.partial")
    try:
        with partial.open("wb") as out:
            summary = write_dataset(out, exported_trajectories(ids), job.config, on_trajectory=report)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    publish_artifact(target)  # for the web servers, with KLONG_STORAGE=s3
    relative = str(target.relative_to(Path(settings.DATA_DIR).resolve()))
    progress.artifact(target.name, relative, kind="dataset", windows=summary["windows"])
    exported = set(summary["trajectories"])
    skipped = [pk for pk in ids if pk not in exported]
    if skipped:
        progress.log(f"Left out (deleted, rejected since, or without turns): {', '.join(map(str, skipped))}")
    progress.update(1.0, f"{len(summary['trajectories'])} trajectories, {summary['windows']:,} windows", step=len(ids),
                    force=True)
    return {"trajectories": len(summary["trajectories"]), "windows": summary["windows"], "skipped": skipped,
            "file": target.name, "size_bytes": target.stat().st_size}
