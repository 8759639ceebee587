"""A new user on a fresh machine, through the UI only: the dashboard says where to start, and every
job kind runs from its first-steps link on the demo (its tiny model built offline, as `make run`
builds it) through the real worker, in a real browser."""

from __future__ import annotations

import re
import time

import pytest

from apps.core.demo import DEMO_ENDPOINT, demo_model_folder, register_demo_model, seed_demo
from apps.jobs.models import Job, ModelCheckpoint
from apps.jobs.registry import KINDS
from apps.judging.models import ModelEndpoint
from worker.training.tiny import build_tiny_model

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Kinds with no first-steps link, and why: they need what a fresh CPU machine has not, or start
# from their own page with the user's own file.
NOT_FROM_THE_DEMO = {
    "gpu_check": "needs a GPU worker",
    "judge_eval": "starts from the JudgeEval page with an uploaded human-graded tree",
    "ranks": "queued by an SFT or RL job over several nodes, one per other node",
    "trajectory_import": "starts when a large trajectory file is uploaded",
    "trajectory_tokens": "started through the API after KLONG_TOKENIZER_PATH changes",
}
# The tiny model answers noise: a drafted rubric is refused, and the job says so.
EXPECTED_FAILURES = {"rubric_draft": "no valid rubric tree"}


@pytest.fixture
def demo(personas):
    seed_demo(personas["admin"])
    build_tiny_model(demo_model_folder())
    register_demo_model(personas["admin"])


def wait_finished(timeout_s: float) -> list[Job]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = list(Job.objects.filter(created_by__username__startswith="operator").order_by("pk"))
        if all(job.is_finished for job in jobs):
            return jobs
        time.sleep(0.5)
    raise AssertionError("still running: " + ", ".join(f"{j.kind} {j.state} {j.message}" for j in jobs
                                                          if not j.is_finished))


def test_the_demo_registers_its_model_as_a_listed_checkpoint_and_a_local_endpoint(demo, client_for):
    checkpoint = ModelCheckpoint.objects.get()
    sft = Job.objects.get(kind="sft")
    assert sft.result["checkpoint"] == checkpoint.pk and checkpoint.job == sft
    assert f"#{sft.pk}" in client_for("viewer").get("/jobs/checkpoints/").content.decode()
    endpoint = ModelEndpoint.objects.get(name=DEMO_ENDPOINT)
    assert (endpoint.backend, endpoint.model) == ("transformers", str(demo_model_folder()))


def test_every_job_kind_runs_from_the_dashboards_first_steps(demo, page, live_server, personas, browser_login,
                                                             celery_worker):
    browser_login(personas["operator"])
    # The count cards open their pages; the first steps say where to start.
    assert page.locator("[data-testid=count-card]").first.get_attribute("href") == "/papers/"
    links = page.locator("[data-testid=first-step-launch]")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    for href in hrefs:
        page.goto(live_server.url + href)
        # The forms as pre-filled: papers and endpoints are chosen in selects by name (no numbers).
        for field in ("paper", "endpoint"):
            if f"&{field}=" in href:
                chosen = page.locator(f"#id_config-{field} option:checked").inner_text()
                assert chosen.startswith(("demo-sparse-routing: ", f"{DEMO_ENDPOINT} (")), chosen
        page.click("main button[type=submit].primary")
        page.wait_for_url(re.compile(r".*/jobs/\d+/$"))
    jobs = wait_finished(240)
    launched = {job.kind for job in jobs}
    assert launched == set(KINDS) - set(NOT_FROM_THE_DEMO), launched
    for job in jobs:
        expected = EXPECTED_FAILURES.get(job.kind)
        if expected:
            assert job.state == "failed" and expected in job.error, (job.kind, job.error)
        else:
            assert job.state == "succeeded", (job.kind, job.error)
    distill = next(job for job in jobs if job.kind == "distill")
    assert distill.result["judged"] == distill.result["runs"] == 1
    # What SFT trained is listed, and the agent's run was recorded.
    sft = next(job for job in jobs if job.kind == "sft")
    assert ModelCheckpoint.objects.filter(job=sft).exists()
