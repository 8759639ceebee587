"""Files a job offers for download (a dataset export's zip): where a job writes them, how they are served.

A job writes them in ``exports/job-<id>/`` of the data folder and records each as a JobArtifact;
only artifacts in that folder are served, so no recorded path can expose another file of the
server. The job page and ``GET /api/jobs/<id>/artifacts/<id>/download/`` answer the same response.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from django.conf import settings
from django.http import Http404, StreamingHttpResponse

from apps.core.downloads import file_download
from apps.jobs.models import DOWNLOADS_FOLDER, JobArtifact
from apps.ops.artifacts import fetch_artifact


def downloads_root() -> Path:
    return (Path(settings.DATA_DIR) / DOWNLOADS_FOLDER).resolve()


def job_download_folder(job_id: int) -> Path:
    """Where job ``job_id`` writes the files it offers for download."""
    return downloads_root() / f"job-{job_id}"


def artifact_path(artifact: JobArtifact) -> Path:
    """The artifact's file on this server, fetched from the shared storage if another machine wrote it."""
    path = (Path(settings.DATA_DIR) / artifact.path).resolve()
    if not artifact.downloadable or not path.is_relative_to(downloads_root()):
        raise Http404("This artifact is not offered for download.")
    if not path.is_file() and not fetch_artifact(path):
        raise Http404("The artifact's file is not on this server any more.")
    return path


def artifact_download(artifact: JobArtifact) -> StreamingHttpResponse:
    path = artifact_path(artifact)
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return file_download(path, path.name, content_type)
