"""Foundation figures: dashboard time, job round trip through a real worker, against baselines.

Runs on the embedded defaults in a temporary data folder (SQLite + the embedded Redis), with a
real Celery worker in a thread, so it needs nothing but the installed requirements.
"""

from __future__ import annotations

import io
import statistics
import time

from _django import line, timed_ms  # first: sets up Django on the embedded defaults
from django.conf import settings
from django.core.management import call_command
from django.test import Client

from apps.core import embedded_redis


def main() -> None:
    redis_proc = embedded_redis.start(settings.DATA_DIR, settings.EMBEDDED_REDIS_SOCKET)
    try:
        call_command("migrate", verbosity=0)
        quiet = io.StringIO()
        call_command("createadmin", password="bench-password-1", stdout=quiet)
        call_command("seed_demo", stdout=quiet)
        bench_pages()
        bench_jobs()
    finally:
        if redis_proc is not None:
            redis_proc.terminate()


def bench_pages() -> None:
    client = Client(SERVER_NAME="localhost")
    client.login(username="admin", password="bench-password-1")
    client.get("/")  # warm caches (templates, worker status)
    dashboard = statistics.median(timed_ms(lambda: client.get("/"), 30))
    anonymous = Client(SERVER_NAME="localhost")  # one client: a new one re-loads the middleware
    anonymous.get("/login/")
    login_page = statistics.median(timed_ms(lambda: anonymous.get("/login/"), 30))
    line("dashboard_get_demo_data", dashboard, "ms", "< 150 ms")
    line("login_page_get_baseline", login_page, "ms", "baseline")
    print(f"dashboard_vs_login_page: {dashboard / login_page:.1f}x", flush=True)


def bench_jobs() -> None:
    import celery.contrib.testing.tasks  # noqa: F401
    from celery.contrib.testing.worker import start_worker
    from django.contrib.auth import get_user_model

    from apps.jobs.models import Job
    from apps.jobs.services.launching import launch_job
    from klong_site.celery_app import app
    from worker.tasks import ping

    admin = get_user_model().objects.get(username="admin")
    with start_worker(app, pool="solo", perform_ping_check=True):
        ping_ms = statistics.median(timed_ms(lambda: ping.delay("x").get(timeout=10), 20))

        def round_trip() -> None:
            job = launch_job("selftest", {"steps": 1, "delay_s": 0}, admin)
            while not Job.objects.filter(pk=job.pk, state=Job.State.SUCCEEDED).exists():
                time.sleep(0.002)

        job_ms = statistics.median(timed_ms(round_trip, 20))
    line("job_round_trip_selftest", job_ms, "ms", "< 500 ms")
    line("celery_ping_round_trip_baseline", ping_ms, "ms", "baseline")
    print(f"job_vs_bare_task: {job_ms / ping_ms:.1f}x", flush=True)


if __name__ == "__main__":
    main()
