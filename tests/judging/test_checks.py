"""Programmatic leaves: a sandboxed command decides the leaf, no model is asked."""

from __future__ import annotations

import shutil

import pytest

from apps.judging.models import JudgeRun, RubricCheck
from apps.judging.services import request_judge_run
from apps.rubrics.paperbench import flatten, leaf_mask
from tests.judging.helpers import make_endpoint, make_paper_with_rubric, make_submission, stored_submission
from tests.judging.test_judge_runs import run_job_inline
from worker.judge.checks import run_check


def test_a_passing_command_passes_and_a_failing_one_fails(tmp_path):
    folder = make_submission(tmp_path / "s")
    passed = run_check("grep -q 0.91 results.csv && echo found", folder)
    assert passed.passed and passed.exit_code == 0 and "found" in passed.output
    failed = run_check("test -f missing.txt", folder)
    assert not failed.passed and failed.exit_code == 1 and not failed.error


def test_a_check_has_no_network_and_cannot_change_the_submission(tmp_path):
    folder = make_submission(tmp_path / "s")
    result = run_check("echo changed > results.csv; cat /proc/net/dev | grep -c ':' ", folder)
    assert result.output.strip().splitlines()[-1] == "1"  # only the loopback device
    assert (folder / "results.csv").read_text() == "model,accuracy\nsmall,0.91\n"


def test_a_check_past_its_timeout_fails_with_the_reason(tmp_path):
    result = run_check("sleep 5", make_submission(tmp_path / "s"), timeout_s=1)
    assert not result.passed and "timed out after 1 s" in result.output


def test_without_bubblewrap_a_check_cannot_run_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    result = run_check("true", make_submission(tmp_path / "s"))
    assert result.error == ("cannot sandbox the check: bubblewrap (bwrap) is not installed on this worker "
                            "(apt-get install bubblewrap)")


def leaf_ids(version) -> list[str]:
    nodes = flatten(version.tree)
    mask = leaf_mask(nodes)
    return [str(n.node_id) for n in nodes if mask[n.index]]


@pytest.mark.django_db
def test_a_judge_run_grades_checked_leaves_by_their_command(stub, personas):
    paper, version = make_paper_with_rubric("checked")
    first, second = leaf_ids(version)[:2]
    RubricCheck.objects.create(paper=paper, node_id=first, command="grep -q load_cifar10 data.py")
    RubricCheck.objects.create(paper=paper, node_id=second, command="grep -q normalise data.py")
    job = request_judge_run(paper=paper, endpoint=make_endpoint(stub.base_url), submission=stored_submission(),
                            user=personas["operator"])
    run = JudgeRun.objects.get(pk=run_job_inline(job)["judge_run"])
    by_id = {g.node_id: g for g in run.grades.all()}
    assert (by_id[first].score, by_id[second].score) == (1, 0)
    assert by_id[first].calls == 0 and "Programmatic check passed" in by_id[first].explanation


@pytest.mark.django_db
def test_a_check_must_name_a_leaf_of_the_paper(client_for):
    paper, version = make_paper_with_rubric("p")
    root_id = str(flatten(version.tree)[0].node_id)
    client = client_for("curator")
    bad = client.post("/api/rubric-checks/", {"paper": "p", "node_id": root_id, "command": "true"},
                      content_type="application/json")
    assert bad.status_code == 400 and "is not a leaf" in bad.json()["node_id"][0]
    missing = client.post("/api/rubric-checks/", {"paper": "p", "node_id": "nope", "command": "true"},
                          content_type="application/json")
    assert missing.status_code == 400 and "No node with id 'nope'" in missing.json()["node_id"][0]
    good = client.post("/api/rubric-checks/", {"paper": "p", "node_id": leaf_ids(version)[0], "command": "true"},
                       content_type="application/json")
    assert good.status_code == 201


@pytest.mark.django_db
def test_viewers_cannot_add_checks_and_curators_can_from_the_page(client_for):
    paper, version = make_paper_with_rubric("p")
    leaf = leaf_ids(version)[0]
    data = {"paper": paper.pk, "node_id": leaf, "command": "test -f reproduce.sh", "timeout_s": "30"}
    assert client_for("viewer").post("/judging/checks/", data).status_code == 403
    response = client_for("curator").post("/judging/checks/", data)
    assert response.status_code == 302 and RubricCheck.objects.get().node_id == leaf



@pytest.mark.django_db
def test_a_check_timeout_above_the_maximum_is_refused(client_for):
    paper, version = make_paper_with_rubric("p")
    data = {"paper": "p", "node_id": leaf_ids(version)[0], "command": "true", "timeout_s": 10**6}
    response = client_for("curator").post("/api/rubric-checks/", data, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["timeout_s"] == ["Ensure this value is less than or equal to 600."]


@pytest.mark.django_db
@pytest.mark.parametrize("pk", ["abc", "999999"])
def test_deleting_a_check_that_is_not_there_is_a_400_naming_the_problem(client_for, pk):
    paper, version = make_paper_with_rubric("p")
    RubricCheck.objects.create(paper=paper, node_id=leaf_ids(version)[0], command="true")
    response = client_for("curator").post("/judging/checks/", {"delete": pk})
    assert response.status_code == 400 and "No such check" in response.content.decode()
    assert RubricCheck.objects.count() == 1
