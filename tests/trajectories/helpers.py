"""Running a dataset export the way a user does: the request queues a job; here its engine runs in
this process (the worker end to end is tests/trajectories/test_dataset_export.py), then the zip
comes through the job page's download link."""

from __future__ import annotations

import html
import io
import re
import zipfile

from django.test import Client

from apps.jobs.models import Job
from apps.jobs.progress import Progress
from tests.support.streaming import streamed
from worker.engines.dataset_export import run


def start_export(client: Client, query: str) -> Job:
    """Start an export from its page (``query`` as the list or split page links it), as the button does."""
    page = client.get(f"/trajectories/export/?{query}")
    assert page.status_code == 200, page.content
    fields = {name: html.unescape(value) for name, value in
              re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.content.decode())}
    response = client.post("/trajectories/export/", fields)
    assert response.status_code == 302, response.content
    return Job.objects.get(pk=int(re.fullmatch(r"/jobs/(\d+)/", response["Location"]).group(1)))


def run_export(job: Job) -> dict:
    job.refresh_from_db()
    return run(job, Progress(job.pk))


def downloaded_zip(client: Client, job: Job) -> bytes:
    """The zip the job page offers, fetched through its download link."""
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    link = re.search(r'href="(/jobs/\d+/artifacts/\d+/download/)"', page).group(1)
    response = client.get(link)
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    return streamed(response)


def export_zip(client: Client, query: str) -> zipfile.ZipFile:
    job = start_export(client, query)
    run_export(job)
    return zipfile.ZipFile(io.BytesIO(downloaded_zip(client, job)))
