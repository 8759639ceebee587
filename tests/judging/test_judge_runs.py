from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from apps.jobs.models import Job
from apps.jobs.progress import Progress
from apps.judging.models import JudgeRun
from apps.judging.services import request_judge_run, submission_folder
from apps.rubrics.paperbench import flatten
from tests.judging.helpers import make_endpoint, make_paper_with_rubric, stored_submission
from tests.support.openai_stub import stub_score
from worker.engines.judge import run as run_judge


def run_job_inline(job: Job) -> dict:
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING)
    job.refresh_from_db()
    return run_judge(job, Progress(job.pk))


@pytest.mark.django_db
def test_a_judge_job_stores_every_leaf_with_prompt_answer_tokens_cost_and_the_run_totals(stub, personas):
    paper, version = make_paper_with_rubric("tiny", split="train")
    endpoint = make_endpoint(stub.base_url)
    job = request_judge_run(paper=paper, endpoint=endpoint, submission=stored_submission(), user=personas["operator"])
    result = run_job_inline(job)
    run = JudgeRun.objects.get(pk=result["judge_run"])
    grades = list(run.grades.all())
    nodes = flatten(version.tree)
    assert len(grades) == run.n_leaves == 5
    for grade in grades:
        assert grade.score == stub_score(nodes[grade.node_index].requirements)
        assert grade.prompt[-2]["content"].count(nodes[grade.node_index].requirements) == 1
        assert grade.response.startswith("Expectations:")
        assert grade.prompt_tokens > 0 and grade.cost_usd > 0 and grade.latency_s > 0
    assert run.cost_usd == pytest.approx(sum(g.cost_usd for g in grades))
    assert run.prompt_tokens == sum(g.prompt_tokens for g in grades)
    assert run.rubric_hash == version.content_hash
    assert run.endpoint_snapshot["base_url"] == stub.base_url and "api_key" not in run.endpoint_snapshot
    assert run.node_scores["scores"][0] == run.score == result["score"]
    assert run.job_id == job.pk and run.split == "train"


@pytest.mark.django_db
def test_an_invalid_leaf_is_stored_without_a_score_and_counted_on_the_run(stub, personas):
    stub.state.malformed_when = "Images are normalised"
    paper, _ = make_paper_with_rubric("tiny")
    endpoint = make_endpoint(stub.base_url)
    job = request_judge_run(paper=paper, endpoint=endpoint, submission=stored_submission(), user=personas["operator"])
    run = JudgeRun.objects.get(pk=run_job_inline(job)["judge_run"])
    bad = run.grades.get(valid_score=False)
    assert bad.score is None and "no usable verdict" in bad.invalid_reason and bad.calls == 3
    assert run.n_invalid == 1
    assert run.node_scores["invalid"][0] == 1


@pytest.mark.django_db
@pytest.mark.parametrize("split, priority", [("eval", 0), ("held_out", 0), ("train", 9)])
def test_judge_requests_are_queued_at_their_papers_split_priority(stub, personas, split, priority):
    paper, _ = make_paper_with_rubric(f"p-{split}", split=split)
    job = request_judge_run(paper=paper, endpoint=make_endpoint(stub.base_url), submission=stored_submission(),
                            user=personas["operator"])
    assert (job.queue, job.priority) == ("judge", priority)


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["../etc", "submissions/../../x", "media", "submissions/missing"])
def test_a_submission_outside_the_submissions_folder_or_missing_is_refused(path, settings):
    with pytest.raises(ValidationError):
        submission_folder(path)


@pytest.mark.django_db(transaction=True)
def test_an_eval_request_queued_after_100_train_requests_finishes_first(stub, personas, celery_worker):
    from klong_site.celery_app import app

    tree = {"id": "r", "requirements": "root", "weight": 1, "task_category": None, "sub_tasks": [
        {"id": "l", "requirements": "The loader exists", "weight": 1, "sub_tasks": [], "task_category": "Code Development"},
    ]}
    train, _ = make_paper_with_rubric("train-paper", split="train", tree=tree)
    evaluation, _ = make_paper_with_rubric("eval-paper", split="eval", tree=tree)
    endpoint = make_endpoint(stub.base_url)
    submission = stored_submission()
    user = personas["operator"]
    # The worker stops taking judge work while the queue fills, as if none were running.
    hostname = celery_worker.hostname
    app.control.cancel_consumer("judge", destination=[hostname], reply=True)
    try:
        train_jobs = [
            request_judge_run(paper=train, endpoint=endpoint, submission=submission, user=user) for _ in range(100)
        ]
        eval_job = request_judge_run(paper=evaluation, endpoint=endpoint, submission=submission, user=user)
    finally:
        app.control.add_consumer("judge", destination=[hostname], reply=True)
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not Job.objects.filter(pk__in=[j.pk for j in train_jobs], state__in=[Job.State.QUEUED, Job.State.RUNNING]).exists():
            break
        time.sleep(0.2)
    eval_job.refresh_from_db()
    assert eval_job.state == Job.State.SUCCEEDED, eval_job.error
    finished = Job.objects.filter(pk__in=[j.pk for j in train_jobs])
    assert all(j.state == Job.State.SUCCEEDED for j in finished)
    assert all(eval_job.finished_at < j.finished_at for j in finished)
    assert eval_job.created_at > max(j.created_at for j in finished)


@pytest.mark.django_db
def test_a_run_where_no_leaf_could_be_graded_fails_but_keeps_the_record(stub, personas):
    paper, _ = make_paper_with_rubric("tiny")
    endpoint = make_endpoint(stub.base_url, max_retries=0)
    stub.down()
    job = request_judge_run(paper=paper, endpoint=endpoint, submission=stored_submission(), user=personas["operator"])
    with pytest.raises(RuntimeError, match="no leaf could be graded"):
        run_job_inline(job)
    run = JudgeRun.objects.get(job=job)
    assert run.n_invalid == run.n_leaves == 5
    assert not run.grades.filter(score__isnull=False).exists()


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_judge_job_stops_grading_the_remaining_leaves(stub, personas):
    import threading

    from apps.jobs.progress import JobCancelled
    from apps.jobs.services.control import cancel_job
    from tests.judging.helpers import leaf, node

    stub.state.delay_s = 0.05
    tree = node("root", *[leaf(f"criterion {i}") for i in range(200)])
    paper, _ = make_paper_with_rubric("many", tree=tree)
    job = request_judge_run(paper=paper, endpoint=make_endpoint(stub.base_url, concurrency=2),
                            submission=stored_submission(), user=personas["operator"])
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING)
    job.refresh_from_db()
    timer = threading.Timer(0.5, cancel_job, args=(job,))
    timer.start()
    with pytest.raises(JobCancelled):
        run_judge(job, Progress(job.pk, min_interval_s=0))
    timer.join()
    assert len(stub.requests) < 200
    assert not JudgeRun.objects.filter(job=job).exists()


@pytest.mark.django_db
def test_the_jobs_api_validates_a_judge_config_with_its_form(client_for):
    response = client_for("operator").post(
        "/api/jobs/", {"kind": "judge", "config": {"paper": 1, "endpoint": "nope", "submission": "../../etc"}},
        content_type="application/json",
    )
    assert response.status_code == 400
    body = str(response.json())
    assert "No model endpoint named 'nope'" in body and "submission" in body


@pytest.mark.django_db
def test_the_eval_first_rule_holds_when_a_judge_job_is_launched_through_the_generic_api(stub, client_for):
    paper, version = make_paper_with_rubric("p-generic", split="eval")
    make_endpoint(stub.base_url)
    config = {"paper": paper.pk, "rubric_version": version.pk, "endpoint": "stub", "submission": stored_submission()}
    response = client_for("operator").post(
        "/api/jobs/", {"kind": "judge", "config": config, "priority": 9}, content_type="application/json"
    )
    assert response.status_code == 202, response.json()
    assert response.json()["priority"] == 0
