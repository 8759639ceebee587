"""Two real Celery worker processes, as on two machines: a CPU node (queues cpu, judge) and a
GPU-labelled node with two cards (queues gpu, judge, and gpu-2 through KLONG_WORKER_GPUS). Jobs go
to the worker of their queue, a job needing more GPUs than any worker has waits with a warning,
judge work is shared and served eval-first across both, and both show on the workers page, the
API and /metrics."""

from __future__ import annotations

import os
import signal
import socket

import pytest

from apps.jobs.models import Job
from apps.jobs.services.launching import launch_job
from apps.jobs.workers import worker_overview
from apps.judging.services import request_judge_run
from tests.jobs.test_jobs import wait_for
from tests.jobs.test_worker_process import start_worker, stop
from tests.judging.helpers import leaf, make_endpoint, make_paper_with_rubric, node, stored_submission
from tests.support.openai_stub import OpenAIStub

pytestmark = [pytest.mark.django_db(transaction=True)]
NODES = {"cpu1": "cpu,judge", "gpu1": "gpu,judge"}
NODE_ENV = {"gpu1": {"KLONG_WORKER_GPUS": "2"}}


@pytest.fixture(scope="module")
def fleet(django_db_setup, django_db_blocker):
    from apps.jobs.heartbeats import heartbeats_key, redis_client
    from klong_site.celery_app import app

    app.control.purge()
    # A fresh cluster: heartbeats left by worker processes that earlier test modules killed would
    # count as nodes of this fleet for a minute.
    redis_client().delete(heartbeats_key())
    workers = {name: start_worker(name, queues, KLONG_WORKER_HEARTBEAT_S="1", **NODE_ENV.get(name, {}))
               for name, queues in NODES.items()}
    try:
        names = {f"{name}@{socket.gethostname()}" for name in NODES}
        wait_for(lambda: names <= {n for reply in app.control.ping(timeout=0.5) or [] for n in reply}, timeout=60)
        yield workers
    finally:
        for proc in workers.values():
            stop(proc)
        # Killed, they could not remove their heartbeats: leave a shared Redis as it was.
        from worker.heartbeat import forget

        for name in NODES:
            forget(f"{name}@{socket.gethostname()}")


@pytest.fixture(autouse=True)
def quick_broadcasts(settings):
    # Both workers answer within milliseconds here; the page's default wait is a full second.
    settings.KLONG_WORKER_PING_TIMEOUT = 0.3


def finished(job: Job, timeout: float = 60) -> Job:
    return wait_for(lambda: Job.objects.filter(pk=job.pk, state__in=Job.FINISHED).first(), timeout=timeout)


def test_each_job_runs_on_a_worker_of_its_queue(fleet, personas, client_for):
    user = personas["operator"]
    cpu_job = launch_job("selftest", {"steps": 2, "delay_s": 0}, user)
    gpu_job = launch_job("gpu_check", {"matmul_seconds": 0, "require_gpu": False}, user)
    strict = launch_job("gpu_check", {"matmul_seconds": 0, "require_gpu": True}, user)
    two = launch_job("gpu_check", {"matmul_seconds": 0, "require_gpu": False, "gpus": 2}, user)
    eight = launch_job("gpu_check", {"matmul_seconds": 0, "require_gpu": False, "gpus": 8}, user)
    cpu_job, gpu_job, strict, two = finished(cpu_job), finished(gpu_job), finished(strict), finished(two)
    assert (gpu_job.queue, gpu_job.state) == ("gpu", Job.State.SUCCEEDED), gpu_job.error
    # gpu1 has KLONG_WORKER_GPUS=2: it takes two-GPU jobs too; nobody takes an eight-GPU one.
    assert (two.queue, two.state, two.worker.split("@")[0]) == ("gpu-2", Job.State.SUCCEEDED, "gpu1"), two.error
    eight.refresh_from_db()
    assert (eight.queue, eight.state) == ("gpu-8", Job.State.QUEUED)
    page = client_for("operator").get(f"/jobs/{eight.pk}/").content.decode()
    assert 'data-testid="unserved-queue"' in page and "gpu-8" in page
    assert client_for("operator").post(f"/api/jobs/{eight.pk}/cancel/").status_code == 200
    assert cpu_job.worker.startswith("cpu1@") and cpu_job.state == Job.State.SUCCEEDED
    assert gpu_job.worker.startswith("gpu1@") and gpu_job.result["gpus"] == []
    # This machine has no GPU: the check asked to require one fails with the reason, on the GPU node.
    assert strict.worker.startswith("gpu1@") and strict.state == Job.State.FAILED
    assert "No CUDA device is visible to worker gpu1@" in strict.error


def test_judge_work_is_shared_by_both_workers_and_served_eval_first(fleet, personas):
    from klong_site.celery_app import app

    tree = node("root", leaf("The loader exists"))
    train, _ = make_paper_with_rubric("train-paper", split="train", tree=tree)
    evaluation, _ = make_paper_with_rubric("eval-paper", split="eval", tree=tree)
    submission = stored_submission()
    user = personas["operator"]
    hosts = [f"{name}@{socket.gethostname()}" for name in NODES]
    with OpenAIStub() as stub:
        stub.state.delay_s = 0.2  # each judge job takes a moment, so both workers get some
        endpoint = make_endpoint(stub.base_url)
        # Both nodes stop taking judge work while the queue fills, as if they were busy.
        app.control.cancel_consumer("judge", destination=hosts, reply=True)
        try:
            train_jobs = [request_judge_run(paper=train, endpoint=endpoint, submission=submission, user=user)
                          for _ in range(6)]
            eval_job = request_judge_run(paper=evaluation, endpoint=endpoint, submission=submission, user=user)
        finally:
            app.control.add_consumer("judge", destination=hosts, reply=True)
        jobs = [finished(job) for job in [*train_jobs, eval_job]]
    assert all(job.state == Job.State.SUCCEEDED for job in jobs), [job.error for job in jobs]
    eval_job, train_jobs = jobs[-1], jobs[:-1]
    assert (eval_job.priority, train_jobs[0].priority) == (0, 9)
    # Queued last, started first: only the train job the other worker took at the same moment may
    # have started before it.
    assert sum(job.started_at < eval_job.started_at for job in train_jobs) <= 1
    assert {job.worker.split("@")[0] for job in jobs} == {"cpu1", "gpu1"}


def test_the_workers_page_api_and_metrics_show_both_nodes(fleet, client_for, settings):
    settings.KLONG_METRICS_ALLOW = ["127.0.0.1/32"]
    wait_for(lambda: sum(row.heartbeat_age_s is not None for row in worker_overview()) == 2, timeout=15)
    html = client_for("viewer").get("/jobs/workers/").content.decode()
    for name in NODES:
        assert f"{name}@{socket.gethostname()}" in html
    rows = {row["name"].split("@")[0]: row for row in client_for("viewer").get("/api/workers/").json()}
    assert rows["gpu1"]["queues"] == ["gpu", "gpu-2", "judge"] and rows["cpu1"]["queues"] == ["cpu", "judge"]
    assert rows["gpu1"]["node"] == socket.gethostname() and not rows["gpu1"]["silent"]
    text = client_for("viewer").get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    assert 'klong_workers{queue="judge"} 2.0' in text and 'klong_workers{queue="gpu"} 1.0' in text


def test_a_killed_worker_is_shown_as_silent(fleet, client_for, settings):
    settings.KLONG_WORKER_HEARTBEAT_S = 1
    os.killpg(fleet["gpu1"].pid, signal.SIGKILL)
    fleet["gpu1"].wait(timeout=10)
    wait_for(lambda: any(row.silent and row.name.startswith("gpu1@") for row in worker_overview()), timeout=15)
    html = client_for("viewer").get("/jobs/workers/").content.decode()
    assert "Silent workers" in html and html.index("Silent workers") < html.index("gpu1@")
