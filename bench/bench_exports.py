"""Export figures through daphne (a fresh web process per figure, as `make run` serves the app), each
next to a baseline measured in the same run.

- dataset export of 20 trajectories of 1,000 turns (the tiny local tokenizer): the request, to its
  202, and the web process's peak memory growth, against the rendering the request used to hold
  (the job's engine, timed in this process: about 90 s here);
- annotations export of 200,000 rows: first byte, whole, and the web process's peak memory growth,
  against the size of the body (what the old response held, joined, before its first byte);
- a job's 200 MB file through its download link: the same, against the file's size (the client
  reads as fast as it can; daphne has no backpressure, so a slower one makes daphne buffer more).

Runs on the embedded defaults (SQLite + the embedded Redis) in a temporary data folder.
"""

from __future__ import annotations

import io
import json
import os
import random
import time
import urllib.request
from pathlib import Path

from _django import daphne_server, line, peak_rss_mib  # first: sets up Django on the embedded defaults
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from klong_site import embedded_redis

TRAJECTORIES = 20
TURNS = 1000
ANNOTATIONS = 200_000
FILE_MB = 200
WORDS = ["the", "agent", "reads", "paper.md", "trains", "model", "loss", "epoch", "evaluates", "runs", "python", "error", "fix"]


def fetch(url: str, auth: dict[str, str], body: dict | None = None) -> tuple[int, float, float, int]:
    """Status, seconds to the first byte of the body, seconds to the last, bytes. Pages take the session
    cookie, API writes the token (a session would need the CSRF token)."""
    headers = {"Authorization": auth["token"], "Content-Type": "application/json"}
    if body is None:
        headers["Cookie"] = auth["cookie"]
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers=headers)
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        assert response.url == url, f"redirected to {response.url}"
        size = len(response.read(1))
        first = time.perf_counter() - start
        while chunk := response.read(1 << 20):
            size += len(chunk)
        return response.status, first, time.perf_counter() - start, size


def served(path: str, auth: dict[str, str], body: dict | None = None, warm: str = "/api/",
           ) -> tuple[float, float, int, float]:
    """One request to a fresh daphne after a warm-up request: first byte and whole (ms), bytes, and
    how far the server's peak memory rose (MiB)."""
    with daphne_server() as base:
        fetch(base + warm, auth)
        before = peak_rss_mib(base.pid)
        status, first, whole, size = fetch(base + path, auth, body)
        assert status in (200, 202), status
        return first * 1000, whole * 1000, size, peak_rss_mib(base.pid) - before


def make_runs() -> list[int]:
    from tests.trajectories.factories import make_trajectory

    rng = random.Random(0)
    return [make_trajectory(TURNS, review="accepted", title=f"run {k}", texts={
        i: " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 300))) for i in range(2, TURNS)}).pk
        for k in range(TRAJECTORIES)]


def bench_dataset(auth: dict[str, str], ids: list[int]) -> None:
    from apps.jobs.models import Job
    from apps.jobs.progress import Progress
    from worker.engines import engine_for

    body = {"ids": ",".join(map(str, ids))}
    # Warm-up: the export page loads the tokenizer, once per web process.
    first, _, _, grown = served("/api/trajectories/export-dataset/", auth, body,
                                warm=f"/trajectories/export/?ids={ids[0]}")
    line(f"dataset_export_request_{TRAJECTORIES}x{TURNS}_turns", first, "ms", "< 1000 ms (answers 202)")
    line(f"dataset_export_request_{TRAJECTORIES}x{TURNS}_turns_server_memory_growth", grown, "MiB", "< 50 MiB")
    job = Job.objects.filter(kind="dataset_export").latest("pk")
    start = time.perf_counter()
    result = engine_for("dataset_export")(job, Progress(job.pk))
    render_ms = (time.perf_counter() - start) * 1000
    line(f"dataset_export_job_render_{TRAJECTORIES}x{TURNS}_turns", render_ms, "ms",
         f"baseline: what the request held before ({result['windows']:,} windows, {result['size_bytes']:,} bytes)")


def bench_annotations(auth: dict[str, str], ids: list[int]) -> None:
    from apps.trajectories.models import AnnotationLabel, TurnAnnotation

    labels = [AnnotationLabel.objects.get_or_create(name=f"bench-{k}")[0] for k in range(10)]
    user = get_user_model().objects.first()
    TurnAnnotation.objects.bulk_create([
        TurnAnnotation(trajectory_id=ids[k % len(ids)], turn_index=k % TURNS, label=labels[k % 10], author=user,
                       note="the agent ran the wrong script " * 3)
        for k in range(ANNOTATIONS)], batch_size=5000)
    first, whole, size, grown = served("/trajectories/annotations.jsonl", auth)
    line(f"annotations_export_{ANNOTATIONS}_rows_first_byte", first, "ms", "< 500 ms")
    line(f"annotations_export_{ANNOTATIONS}_rows_whole", whole, "ms", "< 30000 ms")
    line(f"annotations_export_{ANNOTATIONS}_rows_server_memory_growth", grown, "MiB",
         f"< 50 MiB; baseline: the body, {size / 2**20:.1f} MiB")


def bench_download(auth: dict[str, str]) -> None:
    from apps.jobs.models import Job

    job = Job.objects.create(kind="selftest", state=Job.State.SUCCEEDED)
    path = Path(settings.DATA_DIR) / "exports" / f"job-{job.pk}" / "big.zip"
    path.parent.mkdir(parents=True)
    with path.open("wb") as out:
        for _ in range(FILE_MB):
            out.write(os.urandom(1 << 20))
    artifact = job.artifacts.create(name="big.zip", kind="dataset", path=f"exports/job-{job.pk}/big.zip")
    first, whole, size, grown = served(f"/jobs/{job.pk}/artifacts/{artifact.pk}/download/", auth)
    line(f"job_file_download_{FILE_MB}_mb_first_byte", first, "ms", "< 500 ms")
    line(f"job_file_download_{FILE_MB}_mb_whole", whole, "ms", "baseline")
    line(f"job_file_download_{FILE_MB}_mb_server_memory_growth", grown, "MiB",
         f"below the file's {size / 2**20:.0f} MiB (a FileResponse: twice the file)")


def main() -> None:
    from apps.core.tokens import create_token
    from tests.trajectories.factories import tiny_tokenizer

    redis_proc = embedded_redis.start(settings.DATA_DIR)
    try:
        call_command("migrate", verbosity=0)
        call_command("createadmin", password="bench-password-1", stdout=io.StringIO())
        admin = get_user_model().objects.get(username="admin")
        session = Client()
        session.force_login(admin)
        auth = {"token": f"Token {create_token(admin, 'bench')[1]}",
                "cookie": f"sessionid={session.cookies['sessionid'].value}"}
        # The web processes read the tokenizer from the environment, as a deployment does.
        os.environ["KLONG_TOKENIZER_PATH"] = settings.KLONG_TOKENIZER_PATH = str(
            tiny_tokenizer(Path(settings.DATA_DIR) / "tok"))
        ids = make_runs()
        bench_download(auth)
        bench_annotations(auth, ids)
        bench_dataset(auth, ids)
    finally:
        if redis_proc is not None:
            redis_proc.terminate()


if __name__ == "__main__":
    main()
