"""The ``rl`` job kind: launch form and API, placement, and a real run on a Celery worker."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.conf import settings

from apps.jobs.forms_rl import format_stages, parse_stages
from apps.jobs.models import Job, ModelCheckpoint
from worker.training.tiny import build_tiny_model


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("rl-job-policy"))


def policy_checkpoint(tiny_policy: Path, name: str = "sft result") -> ModelCheckpoint:
    """A checkpoint in the data folder, as an SFT job leaves one."""
    relative = Path("checkpoints") / f"test-{name.replace(' ', '-')}"
    shutil.copytree(tiny_policy, Path(settings.DATA_DIR) / relative, dirs_exist_ok=True)
    return ModelCheckpoint.objects.create(name=name, path=str(relative), base_model="tiny", method="full")


TOY = {"task_source": "toy", "toy_tasks": 1, "n_rollouts": 2, "stages": "20m:2, 40m:1", "l_max": 160,
       "learning_rate": 1e-2, "minibatch_size": 16}


def test_stages_parse_with_units_and_must_grow():
    assert parse_stages("2h:10, 4h:10, 6h:10") == [(7200.0, 10), (14400.0, 10), (21600.0, 10)]
    assert format_stages(parse_stages("90m:3,3h:1, 11000s:2")) == "90m:3, 3h:1, 11000s:2"
    with pytest.raises(ValueError, match="must grow"):
        parse_stages("4h:10, 2h:10")
    with pytest.raises(ValueError, match="TIMEOUT:ITERATIONS"):
        parse_stages("2 hours")


@pytest.mark.django_db
def test_the_launch_page_offers_checkpoints_as_the_policy(client_for, tiny_policy):
    checkpoint = policy_checkpoint(tiny_policy)
    page = client_for("operator").get("/jobs/new/?kind=rl")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'<option value="{checkpoint.pk}">#{checkpoint.pk} sft result' in html
    assert 'value="2h:10, 4h:10, 6h:10"' in html
    assert client_for("viewer").get("/jobs/new/?kind=rl").status_code == 403


@pytest.mark.django_db
def test_the_api_launches_on_the_cpu_queue_without_gpus_and_the_gpu_queue_with(client_for, tiny_policy):
    checkpoint = policy_checkpoint(tiny_policy)
    client = client_for("operator")
    config = {**TOY, "policy_checkpoint": str(checkpoint.pk)}
    cpu = client.post("/api/jobs/", {"kind": "rl", "config": config}, content_type="application/json")
    gpu = client.post("/api/jobs/", {"kind": "rl", "config": {**config, "gpus": 1}}, content_type="application/json")
    node = client.post("/api/jobs/", {"kind": "rl", "config": {**config, "gpus": 4}}, content_type="application/json")
    assert cpu.status_code == gpu.status_code == node.status_code == 202
    assert (cpu.json()["queue"], cpu.json()["gpus"]) == ("cpu", 0)
    assert (gpu.json()["queue"], gpu.json()["gpus"]) == ("gpu", 1)
    assert (node.json()["queue"], node.json()["gpus"]) == ("gpu-4", 4)  # only workers with 4+ GPUs take it
    assert Job.objects.get(pk=cpu.json()["id"]).config["stages"] == "20m:2, 40m:1"


@pytest.mark.django_db
def test_bad_rl_configs_get_clear_errors(client_for, tiny_policy):
    client = client_for("operator")

    def errors(config: dict) -> dict:
        response = client.post("/api/jobs/", {"kind": "rl", "config": config}, content_type="application/json")
        assert response.status_code == 400
        return response.json()["config"]

    assert "must grow" in errors({**TOY, "policy_model": str(tiny_policy), "stages": "4h:1, 2h:1"})["stages"][0]
    assert "one of the two" in errors(TOY)["policy_checkpoint"][0]
    papers = errors({**TOY, "policy_model": str(tiny_policy), "task_source": "papers"})
    assert "at least one paper" in papers["papers"][0] and "endpoint" in papers["judge_endpoint"][0]
    assert "not a model folder" in errors({**TOY, "policy_model": "/nonexistent"})["policy_model"][0]
    server = {**TOY, "policy_model": str(tiny_policy), "task_source": "papers", "policy_server_url": "ftp://gpu.example.org/v1"}
    assert "http:// or https://" in errors(server)["policy_server_url"][0]
    assert "less than or equal to 16" in errors({**TOY, "policy_model": str(tiny_policy), "gpus": 17})["gpus"][0]
    # driver processes: paper rollouts against a served policy, no more of them than rollouts at once
    toy = {**TOY, "policy_model": str(tiny_policy), "rollout_processes": 2}
    assert "paper rollouts" in errors(toy)["rollout_processes"][0]
    assert "More driver processes" in errors({**toy, "rollout_concurrency": 1})["rollout_processes"][-1]
    assert "greater than or equal to 1" in errors({**toy, "rollout_processes": 0})["rollout_processes"][0]
    assert client_for("viewer").post("/api/jobs/", {"kind": "rl", "config": TOY},
                                     content_type="application/json").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_an_rl_job_streams_its_metrics_and_checkpoints_every_stage(tiny_policy, personas, client_for, celery_worker):
    from tests.jobs.test_jobs import run_and_watch

    start = policy_checkpoint(tiny_policy)
    job = Job.objects.create(kind="rl", queue="cpu", created_by=personas["operator"], title="toy rl",
                             config={**TOY, "policy_checkpoint": str(start.pk), "partial_rollouts": True,
                                     "max_staleness": 1, "clip_eps": 0.2, "kl_coef": 0.05, "seed": 0})
    events = run_and_watch(job, "cpu", client_for("viewer"))
    assert events[-1]["state"] == "succeeded", events[-1]["error"]
    points = [e for e in events if e["kind"] == "metric"]
    assert [p["step"] for p in points] == [1, 2, 3]
    assert {"reward", "advantage_std", "rollout_turns", "truncation_rate", "judge_queue_depth", "kl",
            "time_rollout_s", "time_judge_s", "time_train_s"} <= set(points[0]["values"])
    assert [p["values"]["stage"] for p in points] == [1.0, 1.0, 2.0]
    checkpoints = list(ModelCheckpoint.objects.filter(job=job).order_by("pk"))
    assert [c.method for c in checkpoints] == ["rl", "rl"]
    assert checkpoints[0].base_model == str(Path(settings.DATA_DIR) / start.path)
    assert checkpoints[1].base_model == str(Path(settings.DATA_DIR) / checkpoints[0].path)  # stage 2 from stage 1
    job.refresh_from_db()
    assert job.checkpoint["stage"] == 2 and job.result["checkpoints"] == [c.pk for c in checkpoints]
    page = client_for("viewer").get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="rl-panel"' in page and 'data-stages="20m:2, 40m:1"' in page and "/static/js/job-rl." in page  # a content-hashed name


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_job_page_draws_the_stage_timeline_and_the_rl_plots(page, live_server, personas, browser_login):
    from apps.jobs.models import JobMetric

    job = Job.objects.create(kind="rl", state=Job.State.RUNNING, title="rl <b>run</b>",
                             config={**TOY, "stages": "20m:2, 40m:3"}, created_by=personas["operator"])
    rows = []
    for step, (stage, reward, truncated) in enumerate([(1, 0.2, 1.0), (1, 0.4, 1.0), (2, 0.5, 0.5)], start=1):
        for name, value in {"stage": stage, "reward": reward, "q_mean": reward, "advantage_std": 0.1,
                            "advantage_min": -0.2, "advantage_max": 0.2, "rollout_turns": 6, "rollout_tokens": 30,
                            "truncation_rate": truncated, "judge_queue_depth": step}.items():
            rows.append(JobMetric(job=job, step=step, name=name, value=value))
    JobMetric.objects.bulk_create(rows)
    browser_login(personas["viewer"])
    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    stages = page.locator("#rl-timeline li")
    page.wait_for_function("document.querySelectorAll('#rl-timeline li.done').length === 1")
    assert stages.count() == 2
    assert stages.nth(0).inner_text() == "Stage 1 · timeout 20m · 2/2 iterations"
    assert stages.nth(1).inner_text() == "Stage 2 · timeout 40m · 1/3 iterations"
    assert "reward 0.500, truncated 50%, judge queue 3" in page.locator("#rl-summary").inner_text()
    # one trace per figure series: reward, q_mean, three advantage lines, two lengths, truncation, queue
    page.wait_for_function("document.querySelectorAll('#rl-plots .scatterlayer .trace').length === 9")


@pytest.mark.django_db
def test_a_retried_rl_job_resumes_after_its_last_finished_stage(tiny_policy, personas):
    from apps.jobs.progress import Progress
    from worker.engines.rl import run

    stage1 = Path(settings.DATA_DIR) / "checkpoints" / "resume-stage-1"
    shutil.copytree(tiny_policy, stage1, dirs_exist_ok=True)
    job = Job.objects.create(kind="rl", state=Job.State.RUNNING, created_by=personas["operator"],
                             config={**TOY, "policy_model": str(tiny_policy)},
                             checkpoint={"step": 2, "stage": 1, "path": str(stage1)})
    result = run(job, Progress(job.pk))
    [stage] = result["stages"]  # only stage 2 ran, from stage 1's checkpoint, steps counted on
    assert stage["stage"] == 2 and stage["start_from"] == str(stage1) and stage["first_step"] == 3
    assert list(job.metrics.filter(name="reward").values_list("step", flat=True)) == [3]
    assert ModelCheckpoint.objects.get(job=job).base_model == str(stage1)
