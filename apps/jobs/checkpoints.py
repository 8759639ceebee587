"""Trained model checkpoints: the list with lineage, and download as a zip."""

from __future__ import annotations

import zipfile
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from apps.core.downloads import file_download
from apps.core.pages import require_perm
from apps.jobs.models import ModelCheckpoint
from apps.jobs.services.checkpoints import register_checkpoint_endpoint
from apps.ops.artifacts import fetch_artifact


def checkpoint_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(ModelCheckpoint.objects.select_related("job"), 25).get_page(request.GET.get("page"))
    return render(request, "jobs/checkpoints.html", {"page": page})


def checkpoint_folder(checkpoint: ModelCheckpoint) -> Path:
    folder = (settings.DATA_DIR / checkpoint.path).resolve()
    # The path is data, not code: never serve anything outside the data folder.
    if settings.DATA_DIR.resolve() not in folder.parents:
        raise Http404("The checkpoint's files are not on this server.")
    # Trained on another machine (KLONG_STORAGE=s3): fetched from the bucket on first use.
    if not folder.is_dir() and not fetch_artifact(folder):
        raise Http404("The checkpoint's files are not on this server.")
    return folder


def checkpoint_download(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    return checkpoint_zip_response(get_object_or_404(ModelCheckpoint, pk=pk))


def checkpoint_zip_response(checkpoint: ModelCheckpoint) -> StreamingHttpResponse:
    """The checkpoint's folder as a zip (built once, rebuilt when the folder changed), streamed; the
    page and the API (``GET /api/checkpoints/<id>/download/``) both answer with it."""
    folder = checkpoint_folder(checkpoint)
    archive = folder.with_suffix(".zip")
    if not archive.exists() or archive.stat().st_mtime < folder.stat().st_mtime:
        partial = archive.with_suffix(".zip.partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as out:  # weights do not compress
            for file in sorted(folder.rglob("*")):
                if file.is_file():
                    out.write(file, file.relative_to(folder))
        partial.replace(archive)  # never serve a half-written zip
    return file_download(archive, f"checkpoint-{checkpoint.pk}.zip", "application/zip")


@require_POST
def checkpoint_endpoint(request: HttpRequest, pk: int) -> HttpResponse:
    """Register the checkpoint as a local model endpoint, so agents and judges can call it."""

    require_perm(request, "launch_jobs")
    checkpoint = get_object_or_404(ModelCheckpoint, pk=pk)
    endpoint, created = register_checkpoint_endpoint(checkpoint, checkpoint_folder(checkpoint))
    verb = "Registered" if created else "Already registered:"
    messages.success(request, f"{verb} model endpoint {endpoint.name}.")
    return redirect("judging:endpoints")
