"""The rubric_draft job: a model's tree validated, fed back when refused, never over a curated rubric."""

from __future__ import annotations

import json

import pytest

from apps.jobs.models import Job
from apps.jobs.services.launching import JobConfigError, launch_job
from apps.papers.models import Paper
from apps.rubrics.paperbench import flatten
from apps.rubrics.services.store import export_draft, has_draft, replace_draft
from apps.rubrics.services.versions import create_version
from tests.factory.conftest import make_endpoint
from tests.judging.helpers import leaf, node, small_tree
from worker.factory.rubric_draft import read_answer
from worker.tasks import run_job


def fenced(tree) -> str:
    return f"Here is the rubric.\n```json\n{json.dumps(tree)}\n```\nGood luck."


def test_an_answer_missing_ids_is_completed_and_one_with_a_bad_category_is_refused_by_path():
    tree = small_tree()
    del tree["id"], tree["sub_tasks"][0]["sub_tasks"][0]["id"], tree["sub_tasks"][1]["task_category"]
    outcome = read_answer(fenced(tree))
    assert outcome.ok and len(outcome.tree["id"]) == 36 and outcome.tree["sub_tasks"][1]["task_category"] is None
    bad = node("Root", leaf("Loads data", category="Coding"), leaf("Trains"))
    refused = read_answer(fenced(bad))
    assert not refused.ok and refused.problems[0].startswith("root > 1 Loads data: Unknown task_category 'Coding'")
    assert read_answer("I cannot help with that.").problems == ["The answer holds no JSON object."]


@pytest.fixture
def paper(db):
    return Paper.objects.create(slug="toy", title="Toy paper", markdown="# Toy\nWe sort numbers with merge sort.")


def run_draft(paper, stub, operator, **config) -> Job:
    make_endpoint("drafter", stub)
    job = launch_job("rubric_draft", {"paper": paper.slug, "endpoint": "drafter", **config}, operator)
    run_job(job.pk)  # the task itself, in this thread
    job.refresh_from_db()
    return job


@pytest.mark.django_db
def test_a_refused_tree_goes_back_with_its_problems_and_the_fixed_one_becomes_a_model_draft_version(
        paper, stub, personas):
    from django.conf import settings

    code = settings.DATA_DIR / "official_code" / "toy"
    (code / ".git").mkdir(parents=True)
    (code / "merge.py").write_text("def merge_sort(xs):\n    return sorted(xs)\n")
    (code / ".git" / "config").write_text("not code")
    good = small_tree()
    answers = iter([fenced(node("Root", leaf("Sorts", weight=-1), leaf("Merges"))), fenced(good)])
    stub.state.responder = lambda body: next(answers)
    job = run_draft(paper, stub, personas["operator"], max_attempts=3, code_folder="official_code/toy")
    assert job.state == "succeeded", job.error
    assert job.result["applied"] and job.result["attempts"] == 2 and job.result["leaves"] == 5
    prompt = stub.requests[0]["messages"][1]["content"]
    assert "## merge.py\n```\ndef merge_sort(xs)" in prompt and "not code" not in prompt
    feedback = stub.requests[1]["messages"][-1]["content"]
    assert "refused by the validator" in feedback and "weight" in feedback
    assert stub.requests[1]["messages"][-2]["role"] == "assistant"
    version = paper.rubric_versions.get()
    assert version.message.startswith("[model draft] by drafter") and version.tree == good
    assert export_draft(paper) == good
    assert job.result["cost_usd"] > 0 and job.artifacts.get().path.endswith("toy.rubric.json")


@pytest.mark.django_db
def test_malformed_output_after_every_attempt_fails_the_job_with_the_reason_and_stores_nothing(
        paper, stub, personas):
    lone_leaf = '{"id": "x", "requirements": "all", "weight": 1, "task_category": "Code Development"}'
    stub.state.responder = lambda body: lone_leaf
    job = run_draft(paper, stub, personas["operator"], max_attempts=2)
    assert job.state == "failed"
    assert "no valid rubric tree in 2 attempts" in job.error and "at least two leaves" in job.error
    assert not paper.rubric_versions.exists() and not has_draft(paper)


@pytest.mark.django_db
def test_a_curated_rubric_is_never_overwritten_the_draft_is_kept_as_a_file(paper, stub, personas):
    curated = small_tree()
    replace_draft(paper, flatten(curated))
    create_version(paper, personas["curator"], "curated by hand", curated)
    model_tree = node("Model root", leaf("Sorts"), leaf("Merges"))
    stub.state.responder = lambda body: fenced(model_tree)
    job = run_draft(paper, stub, personas["operator"])
    assert job.state == "succeeded"
    assert not job.result["applied"] and "a curator saved version 1" in job.result["reason"]
    assert paper.rubric_versions.count() == 1 and export_draft(paper) == curated
    from django.conf import settings

    assert json.loads((settings.DATA_DIR / job.result["file"]).read_text()) == model_tree


@pytest.mark.django_db
def test_the_launch_form_refuses_a_paper_without_markdown_and_an_unknown_endpoint(personas):
    Paper.objects.create(slug="empty", title="Empty")
    with pytest.raises(JobConfigError) as caught:
        launch_job("rubric_draft", {"paper": "empty", "endpoint": "nope"}, personas["operator"])
    assert "attach its PDF first" in caught.value.errors["paper"][0]
    assert "No model endpoint named 'nope'" in caught.value.errors["endpoint"][0]
    with pytest.raises(JobConfigError) as outside:
        launch_job("rubric_draft", {"paper": "empty", "endpoint": "nope", "code_folder": "../../etc"},
                   personas["operator"])
    assert "under official_code/" in outside.value.errors["code_folder"][0]


@pytest.mark.django_db
def test_the_paper_page_links_to_a_prefilled_rubric_draft_launch(paper, client_for):
    operator = client_for("operator")
    assert "?kind=rubric_draft&amp;paper=toy" in operator.get("/papers/toy/").content.decode()
    form = operator.get("/jobs/new/?kind=rubric_draft&paper=toy").content.decode()
    assert '<option value="toy" selected>' in form  # a select of the papers, this one chosen
    assert "kind=rubric_draft" not in client_for("viewer").get("/papers/toy/").content.decode()
