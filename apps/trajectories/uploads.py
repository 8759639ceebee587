"""Uploaded trajectory files: size limit, staging to disk, import inline or as a job.

The upload page and the API both call ``import_upload``; it ends in the same
``services.import_trajectories`` the command uses.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest

from apps.core.domain import TooLarge
from apps.jobs.models import Job
from apps.jobs.services.launching import launch_job
from apps.ops.artifacts import publish_artifact
from apps.papers.models import Paper
from apps.trajectories.services import ImportResult, import_trajectories


# Files above this are imported by a job: counting tokens of a multi-GB log takes minutes
# and must not hold a web request (or its transaction) that long.
def inline_import_bytes() -> int:
    return settings.KLONG_IMPORT_INLINE_BYTES


class UploadTooLarge(TooLarge, ValueError):
    def __init__(self, size: int, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__(
            f"The file is {size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB "
            "(KLONG_MAX_UPLOAD_BYTES). Import larger files with `manage.py import_trajectories`."
        )


def max_upload_bytes() -> int:
    return int(settings.KLONG_MAX_UPLOAD_BYTES)


def check_request_size(request: HttpRequest) -> None:
    """Refuse from the Content-Length header, before Django reads a byte of the body."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > max_upload_bytes():
        raise UploadTooLarge(length, max_upload_bytes())


def safe_name(name: str) -> str:
    # Keep the suffixes (format detection and the shown source name use them), drop paths.
    base = Path(name or "upload").name
    return re.sub(r"[^\w.+-]", "_", base)[:120] or "upload"


def stage_upload(uploaded: UploadedFile, folder: Path) -> Path:
    """Write the upload to folder/<its own name>, in chunks (Django already spooled it to disk)."""
    if uploaded.size and uploaded.size > max_upload_bytes():
        raise UploadTooLarge(uploaded.size, max_upload_bytes())
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / safe_name(uploaded.name or "")
    temp_path = getattr(uploaded, "temporary_file_path", None)
    try:
        if temp_path is not None:
            shutil.move(temp_path(), target)
        else:
            with target.open("wb") as out:
                for chunk in uploaded.chunks():
                    out.write(chunk)
    except OSError:
        # A full disk (or any write error) must not leave half a file for an import job to read.
        target.unlink(missing_ok=True)
        raise
    return target


@dataclass
class UploadOutcome:
    result: ImportResult | None = None
    job: Job | None = None


def import_upload(
    uploaded: UploadedFile, *, paper: Paper | None, skip_bad: bool, user: Any
) -> UploadOutcome:
    """Import an uploaded file now, or queue an import job for a large one."""
    if (uploaded.size or 0) > inline_import_bytes():
        folder = Path(settings.DATA_DIR) / "imports" / uuid.uuid4().hex
        path = stage_upload(uploaded, folder)
        publish_artifact(folder)  # the import job may run on another machine
        job = launch_job(
            "trajectory_import",
            {"path": str(path), "paper": paper.pk if paper else None, "skip_bad": skip_bad,
             "cleanup": str(folder)},
            user,
            title=f"Import {path.name}",
        )
        return UploadOutcome(job=job)
    with tempfile.TemporaryDirectory(prefix="klong-upload-") as tmp:
        path = stage_upload(uploaded, Path(tmp))
        return UploadOutcome(result=import_trajectories(path, paper=paper, skip_bad=skip_bad, user=user))
