"""What a runner reports: the time left from the pace of its recent steps, and telemetry rows
(metric points, log lines) committed without waiting for the disk."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.jobs.eta import Pace, describe
from apps.jobs.models import Job, JobLog, JobMetric
from apps.jobs.progress import Progress


def test_no_estimate_until_a_couple_of_steps():
    # Step 1 of 100 came after two minutes of loading: that is no pace (the old ETA said 198 min).
    pace = Pace()
    pace.report(120.0, 0.01)
    assert pace.seconds_left(120.0) is None
    pace.report(140.0, 0.02)
    assert pace.seconds_left(140.0) is None
    pace.report(160.0, 0.03)
    assert pace.seconds_left(160.0) == pytest.approx(97 * 20)


def test_a_resumed_run_is_timed_by_the_steps_it_makes_now():
    # Resumed at step 72 of 100, 20 s a step: after steps 73 and 74, 26 steps of 20 s are left
    # (the old ETA, elapsed since the resume * (1 - p) / p, said 39 s at step 74).
    pace = Pace()
    for step, at in ((72, 5.0), (73, 25.0), (74, 45.0)):
        pace.report(at, step / 100)
    assert pace.seconds_left(45.0) == pytest.approx(26 * 20)
    assert pace.seconds_left(55.0) == pytest.approx(26 * 20 - 10)  # counting down between reports


def test_the_pace_is_the_recent_one():
    pace = Pace(window=4)
    at = 0.0
    for step in range(1, 11):  # ten slow steps of 60 s, then fast ones of 6 s
        at += 60.0
        pace.report(at, step / 100)
    for step in range(11, 16):
        at += 6.0
        pace.report(at, step / 100)
    assert pace.seconds_left(at) == pytest.approx(85 * 6)


def test_reports_without_a_step_do_not_change_the_pace_and_a_new_phase_starts_over():
    pace = Pace()
    for step, at in ((1, 10.0), (2, 20.0), (3, 30.0)):
        pace.report(at, step / 10)
    pace.report(31.0, 0.3)  # a message, no step
    assert pace.seconds_left(31.0) == pytest.approx(70 - 1)
    pace.report(40.0, 0.0)  # progress went back: a new phase
    assert pace.seconds_left(40.0) is None


def test_describe_says_it_in_words():
    assert [describe(s) for s in (None, 42.4, 600, 3 * 3600 + 300)] == [
        "", "about 42 s left", "about 10 min left", "about 3 h 5 min left"]


@pytest.mark.django_db
def test_the_api_gives_the_runners_estimate_once_it_has_a_pace(client_for):
    job = Job.objects.create(kind="selftest", state=Job.State.RUNNING, attempt=1, progress=0.7)
    progress = Progress(job.pk, attempt=1, min_interval_s=0)
    viewer = client_for("viewer")
    progress.update(0.71, step=71)
    progress.update(0.72, step=72)
    assert viewer.get(f"/api/jobs/{job.pk}/").json()["eta_s"] is None
    time.sleep(0.2)
    progress.update(0.73, step=73)
    eta = viewer.get(f"/api/jobs/{job.pk}/").json()["eta_s"]
    # 27 steps at the pace of the last two (at least 0.2 s together): at least 2.7 s.
    assert eta is not None and 2.0 <= eta <= 60


@pytest.mark.django_db(transaction=True)  # autocommit, as a worker writes them
def test_metric_points_and_log_lines_commit_without_waiting_for_the_disk():
    job = Job.objects.create(kind="selftest", state=Job.State.RUNNING, attempt=1)
    progress = Progress(job.pk, attempt=1)
    with CaptureQueriesContext(connection) as queries:
        progress.metric(1, loss=0.5)
        progress.log("hello")
    progress.flush()
    statements = " ".join(q["sql"] for q in queries.captured_queries)
    asynchronous = {"sqlite": "PRAGMA synchronous = NORMAL", "postgresql": "SET LOCAL synchronous_commit TO OFF"}
    assert statements.count(asynchronous[connection.vendor]) == 2
    assert JobMetric.objects.filter(job=job).count() == 1 and JobLog.objects.filter(job=job).count() == 1
    if connection.vendor == "sqlite":  # the connection is durable again for everything else
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous")
            assert cursor.fetchone()[0] == 2
