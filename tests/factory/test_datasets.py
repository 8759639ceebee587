"""Datasets: made by hand (page, API) or by a distillation; the distill form's refusals."""

from __future__ import annotations

import pytest

from apps.datasets.models import Dataset
from apps.jobs.services.launching import JobConfigError, validate_config
from apps.papers.models import Paper
from apps.rubrics.services.versions import create_version
from apps.trajectories.models import Trajectory
from tests.factory.conftest import make_endpoint
from tests.judging.helpers import small_tree


@pytest.fixture
def trajectories(db):
    paper = Paper.objects.create(slug="p", title="P")
    return [Trajectory.objects.create(paper=paper, title=f"run {i}", source="distilled", final_score=s)
            for i, s in enumerate([0.9, 0.35])]


@pytest.mark.django_db
def test_the_api_makes_a_dataset_from_ids_refuses_unknown_ids_and_taken_names(client_for, trajectories):
    api = client_for("operator")
    ids = [t.pk for t in trajectories]
    made = api.post("/api/datasets/", {"name": "mine", "trajectory_ids": ids, "notes": "n"},
                    content_type="application/json")
    assert made.status_code == 201 and sorted(made.json()["trajectories"]) == ids
    taken = api.post("/api/datasets/", {"name": "mine", "trajectory_ids": ids}, content_type="application/json")
    assert taken.status_code == 400 and "already exists" in str(taken.json())
    unknown = api.post("/api/datasets/", {"name": "other", "trajectory_ids": [999]}, content_type="application/json")
    assert unknown.status_code == 400 and "No trajectories with ids 999" in str(unknown.json())
    pk = made.json()["id"]
    renamed = api.patch(f"/api/datasets/{pk}/", {"name": "x", "notes": "better"}, content_type="application/json")
    assert renamed.status_code == 200 and (renamed.json()["name"], renamed.json()["notes"]) == ("mine", "better")
    assert client_for("viewer").post("/api/datasets/", {"name": "v", "trajectory_ids": ids},
                                     content_type="application/json").status_code == 403
    assert client_for("outsider").get("/api/datasets/").status_code == 403


@pytest.mark.django_db
def test_the_pages_list_and_show_a_dataset_with_its_score_histogram(client_for, trajectories):
    operator = client_for("operator")
    refused = operator.post("/datasets/", {"name": "d", "trajectories": "1,x"})
    assert refused.status_code == 400 and "numbers separated by commas" in refused.content.decode()
    made = operator.post("/datasets/", {"name": "d", "trajectories": ",".join(str(t.pk) for t in trajectories)})
    dataset = Dataset.objects.get(name="d")
    assert made.status_code == 302 and made["Location"] == f"/datasets/{dataset.pk}/"
    page = client_for("viewer").get(f"/datasets/{dataset.pk}/").content.decode()
    assert "run 0" in page and "run 1" in page
    assert '<script id="dataset-histogram" type="application/json">[0, 0, 0, 1, 0, 0, 0, 0, 0, 1]</script>' in page
    assert ">d</a>" in client_for("viewer").get("/datasets/").content.decode()
    assert "?kind=sft&amp;dataset=d" in operator.get(f"/datasets/{dataset.pk}/").content.decode()
    assert client_for("viewer").post("/datasets/", {"name": "e", "trajectories": "1"}).status_code == 403


@pytest.mark.django_db
def test_the_distill_form_refuses_eval_papers_papers_without_a_rubric_taken_names_and_no_rule(stub, trajectories):
    make_endpoint("teacher", stub)
    Paper.objects.create(slug="bare", title="Bare")
    create_version(Paper.objects.create(slug="ev", title="Ev", split="eval"), tree=small_tree())
    Dataset.objects.create(name="taken")
    with pytest.raises(JobConfigError) as caught:
        validate_config("distill", {"papers": "ev, bare, nope", "teacher": "teacher", "judge": "gone",
                                    "dataset": "taken", "threshold": None})
    errors = caught.value.errors
    assert errors["papers"] == ["ev is in the eval split (distil train papers only); bare has no saved rubric "
                                "version to judge against; no paper 'nope'."]
    assert errors["judge"] == ["No model endpoint named 'gone'."]
    assert errors["dataset"] == ["A dataset named 'taken' already exists."]
    assert errors["__all__"] == ["Give a threshold, a top-k per paper, or both."]


@pytest.mark.django_db
def test_a_trajectory_id_too_large_for_the_database_is_a_400(client_for):
    response = client_for("operator").post("/api/datasets/", {"name": "big", "trajectory_ids": [2**63]},
                                           content_type="application/json")
    assert response.status_code == 400 and "less than or equal to" in str(response.json()["trajectory_ids"])
