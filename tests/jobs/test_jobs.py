from __future__ import annotations

import time

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client

from apps.jobs.models import Job
from apps.jobs.progress import Progress, set_state
from apps.jobs.services.control import cancel_job
from apps.jobs.services.launching import launch_job
from klong_site.asgi import application


def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def flatten(events: list[dict]) -> list[dict]:
    """Coalesced bursts arrive as one ``batch`` event; unpack them in order."""
    out = []
    for event in events:
        out.extend(event["events"] if event["kind"] == "batch" else [event])
    return out


def ws_headers(client: Client) -> list[tuple[bytes, bytes]]:
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    return [(b"origin", b"http://localhost"), (b"cookie", cookie)]


def run_and_watch(job, queue: str, client: Client, timeout: float = 120) -> list[dict]:
    """Queue ``job`` on the real worker while a WebSocket client watches it; every event it got,
    batches unpacked, up to the final snapshot."""
    from asgiref.sync import async_to_sync, sync_to_async
    from channels.testing import WebsocketCommunicator

    from klong_site.asgi import application
    from worker.tasks import run_job

    headers = ws_headers(client)

    async def watch() -> list[dict]:
        communicator = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=headers)
        assert (await communicator.connect())[0]
        events = [await communicator.receive_json_from(timeout=10)]
        await sync_to_async(run_job.apply_async)(args=(job.pk,), queue=queue)
        while not (events[-1]["kind"] == "snapshot" and events[-1]["state"] in ("succeeded", "failed")):
            events.append(await communicator.receive_json_from(timeout=timeout))
        await communicator.disconnect()
        return events

    return flatten(async_to_sync(watch)())


@pytest.mark.embedded
@pytest.mark.django_db(transaction=True)
def test_a_job_launched_through_the_api_runs_on_the_worker(client_for, celery_worker):
    response = client_for("operator").post(
        "/api/jobs/", {"kind": "selftest", "config": {"steps": 3, "delay_s": 0, "echo": "hi"}}, content_type="application/json"
    )
    assert response.status_code == 202
    job_id = response.json()["id"]
    job = wait_for(lambda: Job.objects.filter(pk=job_id, state=Job.State.SUCCEEDED).first())
    assert job.result["echo"] == "hi" and job.progress == 1.0
    assert list(job.metrics.values_list("step", flat=True)) == [1, 2, 3]
    assert job.created_by.username == "operator"


@pytest.mark.embedded
@pytest.mark.django_db(transaction=True)
def test_job_events_reach_a_websocket_client_through_redis(client_for, personas, celery_worker):
    viewer = client_for("viewer")
    job = Job.objects.create(kind="selftest", config={"steps": 2, "delay_s": 0}, created_by=personas["operator"])

    async def watch() -> list[dict]:
        communicator = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=ws_headers(viewer))
        connected, _ = await communicator.connect()
        assert connected
        events = [await communicator.receive_json_from(timeout=5)]
        # Queue the task only once the watcher is subscribed: every event must arrive.
        from asgiref.sync import sync_to_async

        from worker.tasks import run_job

        await sync_to_async(run_job.apply_async)(args=(job.pk,), queue="cpu")
        while not (events[-1].get("kind") == "snapshot" and events[-1]["state"] == "succeeded"):
            events.append(await communicator.receive_json_from(timeout=15))
        await communicator.disconnect()
        return events

    events = flatten(async_to_sync(watch)())
    assert events[0]["kind"] == "snapshot" and events[0]["state"] == "queued"
    kinds = [e["kind"] for e in events]
    assert "state" in kinds and "progress" in kinds
    # In order: the log line, then metric points by step, then the final snapshot last.
    assert [e["step"] for e in events if e["kind"] == "metric"] == [1, 2]
    assert kinds.index("log") < kinds.index("metric") and kinds[-1] == "snapshot"
    assert events[-1]["result"]["echo"] == "pong"


@pytest.mark.django_db(transaction=True)
def test_a_late_watcher_gets_the_current_state_as_a_snapshot(client_for, personas):
    job = Job.objects.create(kind="selftest", created_by=personas["operator"])
    set_state(job.pk, Job.State.FAILED, error="ValueError: boom")
    headers = ws_headers(client_for("viewer"))

    async def first_message() -> dict:
        communicator = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=headers)
        await communicator.connect()
        message = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return message

    message = async_to_sync(first_message)()
    assert message["state"] == "failed" and message["error"] == "ValueError: boom"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("who", ["outsider", "nobody-job"])
def test_websocket_refuses_outsiders_and_unknown_jobs(client_for, personas, who):
    job = Job.objects.create(kind="selftest")
    client = client_for("outsider" if who == "outsider" else "viewer")
    job_id = job.pk if who == "outsider" else job.pk + 1000

    async def attempt():
        communicator = WebsocketCommunicator(application, f"/ws/jobs/{job_id}/", headers=ws_headers(client))
        result = await communicator.connect()
        await communicator.disconnect()
        return result

    assert async_to_sync(attempt)() == (False, 4403)


@pytest.mark.django_db
def test_an_unknown_job_kind_is_a_400_naming_the_known_kinds(client_for):
    response = client_for("operator").post("/api/jobs/", {"kind": "warp-drive"}, content_type="application/json")
    assert response.status_code == 400
    message = response.json()["kind"][0]
    assert message.startswith("Unknown job kind; known:") and "selftest" in message


@pytest.mark.django_db
def test_a_config_is_checked_option_by_option_against_its_kind(client_for):
    response = client_for("operator").post(
        "/api/jobs/", {"kind": "selftest", "config": {"steps": 5000, "warp": 9}}, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json() == {"config": {"warp": ["Unknown option for selftest."]}}
    response = client_for("operator").post(
        "/api/jobs/", {"kind": "selftest", "config": {"steps": 5000}}, content_type="application/json"
    )
    assert response.json() == {"config": {"steps": ["Ensure this value is less than or equal to 1000."]}}
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_left_out_options_take_their_defaults(personas):
    job = launch_job("selftest", {"steps": 3}, personas["operator"])
    assert job.config == {"steps": 3, "delay_s": 0.1, "echo": "pong"}


@pytest.mark.django_db
def test_a_config_that_is_not_an_object_is_a_400(client_for):
    response = client_for("operator").post("/api/jobs/", {"kind": "selftest", "config": [1, 2]}, content_type="application/json")
    assert response.status_code == 400
    assert "config" in response.json()


@pytest.mark.django_db
def test_a_queued_job_is_cancelled_at_once(personas):
    job = launch_job("selftest", {}, personas["operator"])
    assert cancel_job(job).state == Job.State.CANCELLED


@pytest.mark.django_db
def test_cancelling_a_finished_job_is_a_409(client_for, personas):
    job = Job.objects.create(kind="selftest", state=Job.State.SUCCEEDED)
    response = client_for("operator").post(f"/api/jobs/{job.pk}/cancel/")
    assert response.status_code == 409
    assert "already finished" in response.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_a_running_job_stops_at_its_next_progress_report_when_cancelled(personas, celery_worker):
    job = launch_job("selftest", {"steps": 400, "delay_s": 0.05}, personas["operator"])
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).exists())
    cancel_job(job)
    job = wait_for(lambda: Job.objects.filter(pk=job.pk, state=Job.State.CANCELLED).first())
    assert job.metrics.count() < 400 and job.finished_at is not None


@pytest.mark.django_db(transaction=True)
def test_a_failing_engine_fails_the_job_with_its_reason(personas, celery_worker):
    job = launch_job("selftest", {"steps": 3, "delay_s": 0, "fail_at_step": 2}, personas["operator"])
    job = wait_for(lambda: Job.objects.filter(pk=job.pk, state=Job.State.FAILED).first())
    assert job.error == "RuntimeError: failed on purpose at step 2"
    assert list(job.metrics.values_list("step", flat=True)) == [1]


@pytest.mark.django_db
def test_a_job_that_is_not_queued_is_never_run_twice(personas):
    from worker.tasks import run_job

    job = Job.objects.create(kind="selftest", state=Job.State.RUNNING)
    assert run_job.run(job.pk) == "skipped"


@pytest.mark.django_db
def test_progress_updates_are_throttled_but_final_ones_always_written(personas):
    job = Job.objects.create(kind="selftest", state=Job.State.RUNNING)
    progress = Progress(job.pk, min_interval_s=60)
    progress.update(0.1, "first")
    progress.update(0.5, "dropped")
    job.refresh_from_db()
    assert (job.progress, job.message) == (0.1, "first")
    progress.update(1.0, "last", force=True)
    job.refresh_from_db()
    assert (job.progress, job.message) == (1.0, "last")


@pytest.mark.django_db
def test_the_job_page_offers_cancel_to_operators_only(client_for):
    job = Job.objects.create(kind="selftest", state=Job.State.RUNNING)
    assert b"Cancel job" in client_for("operator").get(f"/jobs/{job.pk}/").content
    assert b"Cancel job" not in client_for("viewer").get(f"/jobs/{job.pk}/").content


@pytest.mark.django_db(transaction=True)
def test_a_pipeline_runs_its_stages_in_order_as_one_job(client_for, celery_worker):
    stages = [{"kind": "selftest", "config": {"steps": 2, "delay_s": 0, "echo": f"stage {n}"}} for n in (1, 2, 3)]
    response = client_for("operator").post("/api/jobs/pipeline/", {"stages": stages}, content_type="application/json")
    assert response.status_code == 202
    parent = wait_for(lambda: Job.objects.filter(pk=response.json()["id"], state__in=Job.FINISHED).first())
    assert parent.state == Job.State.SUCCEEDED and parent.step == 3
    children = list(parent.children.order_by("pk"))
    assert [c.result["echo"] for c in children] == ["stage 1", "stage 2", "stage 3"]
    assert children[0].finished_at <= children[1].started_at


@pytest.mark.django_db(transaction=True)
def test_a_failing_stage_fails_the_pipeline_and_stops_it(personas, celery_worker):
    from apps.jobs.services.pipelines import launch_pipeline

    parent = launch_pipeline(
        [{"kind": "selftest", "config": {"steps": 2, "delay_s": 0, "fail_at_step": 1}},
         {"kind": "selftest", "config": {"steps": 2, "delay_s": 0}}],
        personas["operator"],
    )
    parent = wait_for(lambda: Job.objects.filter(pk=parent.pk, state__in=Job.FINISHED).first())
    assert parent.state == Job.State.FAILED
    assert "Stage 1 (selftest" in parent.error and "failed on purpose" in parent.error
    assert parent.children.count() == 1


@pytest.mark.django_db
def test_a_pipeline_with_a_bad_stage_config_queues_nothing(client_for):
    stages = [{"kind": "selftest", "config": {}}, {"kind": "selftest", "config": {"steps": -1}}]
    response = client_for("operator").post("/api/jobs/pipeline/", {"stages": stages}, content_type="application/json")
    assert response.status_code == 400
    assert list(response.json()["config"]) == ["stage 2.steps"]
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_an_artifact_is_recorded_with_its_size(personas, settings):
    job = Job.objects.create(kind="selftest", state=Job.State.RUNNING, attempt=1)
    (settings.DATA_DIR / "artifacts").mkdir(exist_ok=True)
    (settings.DATA_DIR / "artifacts" / "report.json").write_text("{}" * 10)
    Progress(job.pk, attempt=1).artifact("report", "artifacts/report.json", kind="report", rows=3)
    artifact = job.artifacts.get()
    assert (artifact.kind, artifact.size_bytes, artifact.meta) == ("report", 20, {"rows": 3})


@pytest.mark.django_db
def test_a_folder_artifact_is_recorded_with_the_size_of_its_files(settings):
    """A checkpoint is a folder: its size is its files' (a link out of the data folder counts nothing)."""
    job = Job.objects.create(kind="rl", state=Job.State.RUNNING, attempt=1)
    stage = settings.DATA_DIR / "checkpoints" / "job-x" / "stage-1"
    (stage / "sharded").mkdir(parents=True)
    (stage / "model.safetensors").write_bytes(b"w" * 300)
    (stage / "sharded" / "0.distcp").write_bytes(b"s" * 50)
    (stage / "secret").symlink_to(settings.DATA_DIR / "secret_key")
    Progress(job.pk, attempt=1).artifact("stage 1 policy", "checkpoints/job-x/stage-1", kind="checkpoint")
    assert job.artifacts.get().size_bytes == 350



@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("message", ["[" * 100_000 + "]" * 100_000, "not json"])
def test_what_a_watcher_sends_is_answered_read_only_and_never_parsed(client_for, personas, message):
    job = Job.objects.create(kind="selftest", created_by=personas["operator"])
    headers = ws_headers(client_for("viewer"))

    async def send_and_listen() -> dict:
        communicator = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=headers)
        await communicator.connect()
        await communicator.receive_json_from(timeout=5)  # the snapshot
        await communicator.send_to(text_data=message)
        answer = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return answer

    assert async_to_sync(send_and_listen)() == {"kind": "error", "error": "this socket is read-only"}
