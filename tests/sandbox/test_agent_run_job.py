"""The agent_run job end to end: API launch, a real Celery worker, a podman container, cleanup."""

from __future__ import annotations

import socket
import time
import uuid

import pytest
from django.conf import settings

from apps.jobs.models import Job
from apps.papers.models import Paper
from apps.trajectories.models import Trajectory
from tests.jobs.test_jobs import wait_for
from tests.judging.helpers import make_endpoint
from tests.sandbox.conftest import Script, containers
from tests.sandbox.test_agent import TASK, say, solving_script
from tests.support.openai_stub import tool_call
from worker.sandbox import SandboxBusy, SandboxSpec, open_sandbox, slot_key
from worker.sandbox.cleanup import job_is_live, sweep_orphans
from worker.sandbox.limits import HostSlots
from worker.sandbox.signals import on_task_postrun
from worker.tasks import run_job


def launch(client, paper: Paper, **config):
    config = {"paper": paper.pk, "endpoint": "teacher", "backend": "docker", "max_steps": 10, "l_max": 8192,
              "reserve_tokens": 1024, "time_limit_s": 120, "memory_mb": 512, **config}
    return client.post("/api/jobs/", {"kind": "agent_run", "config": config}, content_type="application/json")


def toy_paper() -> Paper:
    return Paper.objects.create(slug=f"toy-{uuid.uuid4().hex[:6]}", title="Toy paper", markdown=TASK.paper_markdown,
                                blacklist=list(TASK.blacklist))


@pytest.mark.django_db(transaction=True)
def test_an_agent_run_from_the_api_records_its_trajectory_and_exports_its_submission(
    stub, client_for, celery_worker, sandbox_image, docker_env
):
    docker_host = docker_env
    stub.state.responder = Script(*solving_script())
    paper = toy_paper()
    make_endpoint(stub.base_url, name="teacher")
    response = launch(client_for("operator"), paper, image=sandbox_image)
    assert response.status_code == 202, response.content
    job = wait_for(lambda: Job.objects.filter(pk=response.json()["id"]).exclude(
        state__in=[Job.State.QUEUED, Job.State.RUNNING]).first(), timeout=60)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.result["end_state"] == "submitted" and job.result["steps"] == 5
    trajectory = Trajectory.objects.get(pk=job.result["trajectory"])
    assert (trajectory.source, trajectory.paper, trajectory.live) == ("distilled", paper, False)
    assert trajectory.turn_count == 12 and trajectory.meta["job"] == job.pk
    answer = settings.DATA_DIR / job.result["submission"] / "answer.txt"
    assert answer.read_text() == "42\n"
    assert job.artifacts.get(name="submission").meta["commit"] == job.result["final_commit"]
    assert containers(docker_host, job.pk) == []
    page = client_for("viewer").get(f"/jobs/{job.pk}/").content.decode()
    assert f'href="/trajectories/{trajectory.pk}/"' in page and "docker sandbox" in page


@pytest.mark.django_db(transaction=True)
def test_cancelling_an_agent_run_kills_its_command_and_removes_its_container(
    stub, client_for, celery_worker, sandbox_image, docker_env
):
    docker_host = docker_env
    stub.state.responder = Script(say("Long job.", tool_call("bash", "c1", cmd="sleep 120")),
                                  then=say("", tool_call("submit")))
    paper = toy_paper()
    make_endpoint(stub.base_url, name="teacher")
    operator = client_for("operator")
    job_id = launch(operator, paper, image=sandbox_image).json()["id"]
    # the sleep is running in the container: its assistant turn is stored, the container is up
    wait_for(lambda: Trajectory.objects.filter(meta__job=job_id, turn_count__gte=3).exists() and containers(
        docker_host, job_id), timeout=60)
    time.sleep(0.5)
    started = time.monotonic()
    assert operator.post(f"/api/jobs/{job_id}/cancel/").status_code in (200, 202)
    job = wait_for(lambda: Job.objects.filter(pk=job_id, state=Job.State.CANCELLED).first(), timeout=30)
    assert time.monotonic() - started < 15
    assert containers(docker_host, job_id) == []
    trajectory = Trajectory.objects.get(meta__job=job.pk)
    assert (trajectory.end_state, trajectory.live) == ("cancelled", False)


@pytest.mark.django_db
def test_a_bad_agent_run_config_is_refused_with_the_reason(stub, client_for):
    make_endpoint(stub.base_url, name="teacher")
    paper = toy_paper()
    response = launch(client_for("operator"), paper, endpoint="nobody")
    assert response.status_code == 400 and "endpoint" in response.json()["config"]
    empty = Paper.objects.create(slug=f"empty-{uuid.uuid4().hex[:6]}", title="Not converted yet")
    response = launch(client_for("operator"), empty)
    assert response.status_code == 400 and "no Markdown" in response.json()["config"]["paper"][0]
    response = launch(client_for("operator"), paper, backend="bwrap", gpus=1)
    assert response.status_code == 400 and "gpus" in response.json()["config"]
    assert launch(client_for("viewer"), paper).status_code == 403
    gpu_run = launch(client_for("operator"), paper, gpus=1)
    assert gpu_run.status_code == 202 and Job.objects.get(pk=gpu_run.json()["id"]).queue == "gpu"
    page = client_for("operator").get("/jobs/new/?kind=agent_run")
    assert page.status_code == 200 and b'name="config-endpoint"' in page.content


@pytest.mark.django_db
def test_the_sweep_removes_containers_of_finished_jobs_and_keeps_live_ones(make_spec, personas, docker_env):
    finished = Job.objects.create(kind="agent_run", state=Job.State.SUCCEEDED, created_by=personas["operator"])
    running = Job.objects.create(kind="agent_run", state=Job.State.RUNNING, created_by=personas["operator"])
    orphan = open_sandbox(make_spec("docker", job_id=finished.pk), slots=None)  # as if its worker had died
    live = open_sandbox(make_spec("docker", job_id=running.pk), slots=None)
    try:
        removed = sweep_orphans(job_is_live)
        assert orphan.id in removed and live.id not in removed
        assert containers(live.spec.docker_host, finished.pk) == []
        assert live.exec("echo alive").stdout.strip() == "alive"
        # the end of the job's task removes what its engine left open (worker/sandbox/signals.py)
        on_task_postrun(sender=run_job, args=(running.pk,))
        assert containers(live.spec.docker_host, running.pk) == []
    finally:
        orphan.close()
        live.close()


@pytest.mark.django_db
def test_sandboxes_per_host_are_limited_by_redis_slots(redis_server):
    import redis

    slots = HostSlots(redis.Redis.from_url(redis_server), limit=2, prefix=f"test-slots-{uuid.uuid4().hex}")
    host = slot_key("bwrap")  # this machine's bubblewrap sandboxes, as open_sandbox and the heartbeat count them
    assert host == f"bwrap:{socket.gethostname()}"
    first = slots.acquire(host, hold_s=30)
    slots.acquire(host, hold_s=1.0)  # never released: it lapses
    assert slots.try_acquire(host, hold_s=30) is None
    assert slots.try_acquire("tcp://gpu-host:2375", hold_s=30) is not None  # each Docker host has its own
    with pytest.raises(SandboxBusy):
        open_sandbox(SandboxSpec(backend="bwrap"), slots=slots, acquire_timeout_s=0.1)
    first.release()
    with open_sandbox(SandboxSpec(backend="bwrap"), slots=slots, acquire_timeout_s=1) as box:
        assert slots.in_use(host) == 2 and box.exec("true").ok
    assert slots.in_use(host) == 1  # closing released the sandbox's slot
    time.sleep(1.1)
    assert slots.in_use(host) == 0


@pytest.mark.django_db
def test_the_paper_page_links_to_an_agent_run_with_the_paper_filled_in(client_for):
    paper = toy_paper()
    page = client_for("operator").get(f"/papers/{paper.slug}/").content.decode()
    link = f"/jobs/new/?kind=agent_run&amp;paper={paper.slug}"
    assert link in page
    form = client_for("operator").get(link.replace("&amp;", "&")).content.decode()
    assert f'<option value="{paper.slug}" selected>' in form  # a select of the papers, by slug
    assert link not in client_for("viewer").get(f"/papers/{paper.slug}/").content.decode()


@pytest.mark.django_db
def test_a_running_trajectory_page_follows_the_run_until_it_ends(client_for):
    from apps.trajectories.recorder import TrajectoryRecorder
    from worker.agent import AgentResult, AgentTurn

    recorder = TrajectoryRecorder.start(source="rollout", model="policy", policy_version="7")
    recorder.add_turn(AgentTurn(0, "system", "You are an agent.", started_at=1.0, ended_at=2.0))
    viewer = client_for("viewer")
    page = viewer.get(f"/trajectories/{recorder.trajectory.pk}/").content.decode()
    assert 'id="live-banner"' in page and "/static/js/trajectory-live." in page  # a content-hashed name
    row = viewer.get(f"/api/trajectories/{recorder.trajectory.pk}/").json()
    assert (row["live"], row["turn_count"], row["policy_version"]) == (True, 1, "7")
    recorder.finish(AgentResult(turns=[], end_state="step_limit", final_commit=None, steps=0, wall_s=1.0,
                                flagged=False))
    assert 'id="live-banner"' not in viewer.get(f"/trajectories/{recorder.trajectory.pk}/").content.decode()
    assert viewer.get(f"/api/trajectories/{recorder.trajectory.pk}/").json()["end_state"] == "step_limit"


@pytest.mark.django_db(transaction=True)
def test_a_recorded_turn_and_the_trajectorys_counters_are_stored_together_or_not_at_all(monkeypatch):
    from django.db.models import QuerySet

    from apps.trajectories.models import Turn
    from apps.trajectories.recorder import TrajectoryRecorder
    from worker.agent import AgentTurn

    recorder = TrajectoryRecorder.start(source="rollout", model="policy", policy_version="1")
    recorder.add_turn(AgentTurn(0, "system", "You are an agent.", started_at=1.0, ended_at=2.0))

    def lost(self, **fields):  # the database goes away between the turn's INSERT and the counters' UPDATE
        raise ConnectionError("database went away")

    monkeypatch.setattr(QuerySet, "update", lost)
    with pytest.raises(ConnectionError):
        recorder.add_turn(AgentTurn(1, "user", "Go on.", started_at=2.0, ended_at=3.0))
    monkeypatch.undo()
    recorder.trajectory.refresh_from_db()
    assert recorder.trajectory.turn_count == 1 and Turn.objects.filter(trajectory=recorder.trajectory).count() == 1


@pytest.mark.django_db(transaction=True)
def test_turns_added_at_once_by_many_sessions_share_commits_and_a_bad_one_fails_only_its_session(monkeypatch):
    import threading

    from django.db import connections
    from django.db.models import QuerySet

    from apps.trajectories.models import Turn
    from apps.trajectories.recorder import TrajectoryRecorder
    from worker.agent import AgentTurn

    recorders = [TrajectoryRecorder.start(source="rollout", model="policy", title=f"session {i}") for i in range(12)]
    bulk_calls, bulk = [], QuerySet.bulk_create

    def counted(self, objs, *args, **kwargs):
        bulk_calls.append(len(objs))
        return bulk(self, objs, *args, **kwargs)

    monkeypatch.setattr(QuerySet, "bulk_create", counted)
    start, errors = threading.Barrier(len(recorders)), {}

    def session(number: int, recorder: TrajectoryRecorder) -> None:
        try:
            start.wait()
            for index in range(5):
                # session 3 repeats an index on its last turn: its error, nobody else's
                recorder.add_turn(AgentTurn(index - (number == 3 and index == 4), "assistant", f"turn {index}",
                                            started_at=1.0, ended_at=2.0))
        except Exception as exc:  # noqa: BLE001 - checked below
            errors[number] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=session, args=pair) for pair in enumerate(recorders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert list(errors) == [3] and "unique" in str(errors[3]).lower()
    for number, recorder in enumerate(recorders):
        recorder.trajectory.refresh_from_db()
        stored = list(Turn.objects.filter(trajectory=recorder.trajectory).values_list("index", flat=True))
        assert stored == [0, 1, 2, 3] if number == 3 else stored == [0, 1, 2, 3, 4]
        assert recorder.trajectory.turn_count == len(stored)  # the counters match what is stored
    assert max(bulk_calls) > 1 and len(bulk_calls) < 60  # turns that arrived together shared a commit


@pytest.mark.django_db
def test_a_requeued_agent_run_starts_afresh_and_closes_the_dead_attempts_trajectory(stub, personas):
    from apps.jobs.progress import Progress
    from apps.jobs.services.launching import launch_job
    from worker.engines.agent_run import run as run_agent_job

    stub.state.responder = Script(say("", tool_call("bash", "c1", cmd="echo 1 > a.txt")),
                                  then=say("", tool_call("submit")))
    make_endpoint(stub.base_url, name="teacher")
    paper = toy_paper()
    job = launch_job("agent_run", {"paper": paper.pk, "endpoint": "teacher", "backend": "bwrap", "l_max": 8192,
                                   "reserve_tokens": 1024}, personas["operator"])
    dead = Trajectory.objects.create(paper=paper, live=True, meta={"job": job.pk}, turn_count=5)
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING, attempt=2)
    job.refresh_from_db()
    result = run_agent_job(job, Progress(job.pk))
    dead.refresh_from_db()
    assert (dead.live, dead.end_state, dead.turn_count) == (False, "error", 5)
    assert result["end_state"] == "submitted" and result["trajectory"] != dead.pk
    assert (settings.DATA_DIR / result["submission"] / "a.txt").read_text() == "1\n"


@pytest.mark.django_db
def test_the_sweep_leaves_another_installations_containers_alone(make_spec, personas, docker_env, monkeypatch):
    finished = Job.objects.create(kind="agent_run", state=Job.State.SUCCEEDED, created_by=personas["operator"])
    monkeypatch.setattr("worker.sandbox.docker_backend.deployment_id", lambda: "another-installation")
    theirs = open_sandbox(make_spec("docker", job_id=finished.pk), slots=None)  # their job with our job's id
    try:
        assert theirs.id not in sweep_orphans(job_is_live)
        assert theirs.exec("echo alive").stdout.strip() == "alive"
    finally:
        theirs.close()


@pytest.mark.django_db
def test_the_sweep_removes_bubblewrap_folders_a_killed_worker_left(make_spec, personas):
    from worker.sandbox.cleanup import sweep_bwrap_folders

    finished = Job.objects.create(kind="agent_run", state=Job.State.SUCCEEDED, created_by=personas["operator"])
    running = Job.objects.create(kind="agent_run", state=Job.State.RUNNING, created_by=personas["operator"])
    left = open_sandbox(make_spec("bwrap", job_id=finished.pk), slots=None)
    live = open_sandbox(make_spec("bwrap", job_id=running.pk), slots=None)
    try:
        left_root = left.root
        left._closed = True  # as if its worker had been killed: nobody will close it
        assert sweep_bwrap_folders(job_is_live) == [str(left_root)]
        assert not left_root.exists() and live.exec("echo alive").stdout.strip() == "alive"
    finally:
        live.close()
