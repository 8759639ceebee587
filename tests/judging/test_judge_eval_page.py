from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.jobs.models import Job
from apps.jobs.progress import Progress
from tests.judging.helpers import make_endpoint
from tests.judging.test_judge_eval_command import JUDGE_EVAL
from worker.engines.judge_eval import run as run_judge_eval

pytestmark = pytest.mark.django_db
TREE = JUDGE_EVAL / "semantic-self-consistency.judge_eval.json"
FIXTURES = JUDGE_EVAL.parent / "fixtures"


def upload(path) -> SimpleUploadedFile:
    return SimpleUploadedFile(path.name, path.read_bytes(), content_type="application/json")


def test_outsiders_cannot_see_judge_eval(client_for):
    assert client_for("outsider").get("/judging/judge-eval/").status_code == 403


def test_viewers_see_the_page_without_the_form(client_for):
    response = client_for("viewer").get("/judging/judge-eval/")
    assert response.status_code == 200 and "judge-eval-form" not in response.content.decode()
    assert client_for("viewer").post("/judging/judge-eval/", {}).status_code == 403


def test_a_judge_eval_launched_from_the_page_reports_metrics_on_the_page(client_for, stub):
    make_endpoint(stub.base_url, name="stub", concurrency=16)
    operator = client_for("operator")
    response = operator.post("/judging/judge-eval/", {"graded_tree": upload(TREE), "endpoint": "stub"})
    job = Job.objects.get(kind="judge_eval")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING, result=run_judge_eval(job, Progress(job.pk)))
    job.refresh_from_db()
    assert job.result["leaves"] == 79 and job.result["overall"]["num_samples"] == 79
    assert set(job.result["stratified"]) == {"Code Development", "Code Execution", "Result Analysis"}
    assert job.artifacts.filter(kind="report").exists()
    html = operator.get("/judging/judge-eval/").content.decode()
    assert f"{job.result['overall']['f1']:.3f}" in html


def test_a_tree_without_human_scores_is_refused(client_for, stub):
    make_endpoint(stub.base_url, name="stub")
    response = client_for("operator").post(
        "/judging/judge-eval/", {"graded_tree": upload(FIXTURES / "hex_flags.json"), "endpoint": "stub"}
    )
    assert response.status_code == 400 and "no human score" in response.content.decode()
    assert not Job.objects.exists()
