from __future__ import annotations

import io
import zipfile

import pytest

from apps.jobs.models import Job
from apps.judging.models import ModelEndpoint
from tests.judging.helpers import make_endpoint, make_paper_with_rubric, stored_submission

pytestmark = pytest.mark.django_db
ENDPOINT = {"name": "vllm-local", "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
            "api_key_env": "KLONG_ENDPOINT_KEY_VLLM", "concurrency": 32, "price_input_per_m": 0.5, "price_output_per_m": 1.5}


def zip_bytes(members: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    buffer.seek(0)
    buffer.name = "submission.zip"
    return buffer


def test_outsiders_cannot_list_endpoints(client_for):
    assert client_for("outsider").get("/api/model-endpoints/").status_code == 403


def test_viewers_can_list_endpoints_but_not_create_them(client_for):
    viewer = client_for("viewer")
    assert viewer.get("/api/model-endpoints/").status_code == 200
    assert viewer.post("/api/model-endpoints/", ENDPOINT, content_type="application/json").status_code == 403


def test_operators_create_endpoints_that_name_the_key_variable_only(client_for):
    response = client_for("operator").post("/api/model-endpoints/", ENDPOINT, content_type="application/json")
    assert response.status_code == 201, response.content
    assert response.json()["api_key_env"] == "KLONG_ENDPOINT_KEY_VLLM"
    assert ModelEndpoint.objects.get(name="vllm-local").concurrency == 32


def test_a_key_variable_name_must_look_like_one(client_for):
    bad = {**ENDPOINT, "api_key_env": "sk-live-123 secret"}
    response = client_for("operator").post("/api/model-endpoints/", bad, content_type="application/json")
    assert response.status_code == 400 and "api_key_env" in response.json()


def test_test_connection_reports_success_and_stores_it(client_for, stub):
    make_endpoint(stub.base_url, name="stub")
    response = client_for("operator").post("/api/model-endpoints/stub/test-connection/")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True and body["reply"].startswith("OK")
    assert ModelEndpoint.objects.get(name="stub").last_test_ok is True


def test_test_connection_to_a_down_endpoint_reports_why(client_for, stub):
    make_endpoint(stub.base_url, name="stub")
    stub.down()
    body = client_for("operator").post("/api/model-endpoints/stub/test-connection/").json()
    assert body["ok"] is False and "cannot connect" in body["message"]
    assert ModelEndpoint.objects.get(name="stub").last_test_message.startswith("stub: gave up")


def test_test_connection_of_a_local_model_checks_the_folder(client_for, tmp_path):
    ModelEndpoint.objects.create(name="local", backend="transformers", model=str(tmp_path))
    body = client_for("operator").post("/api/model-endpoints/local/test-connection/").json()
    assert body["ok"] is False and "config.json is missing" in body["message"]


def test_outsiders_cannot_request_a_judge_run(client_for):
    assert client_for("outsider").post("/api/judge-runs/", {}).status_code == 403


def test_an_uploaded_submission_is_judged_at_the_eval_priority(client_for, stub):
    make_paper_with_rubric("evalpaper", split="eval")
    make_endpoint(stub.base_url, name="stub")
    upload = zip_bytes({"sub/reproduce.sh": b"python train.py\n", "sub/train.py": b"print(1)\n"})
    response = client_for("operator").post("/api/judge-runs/", {"paper": "evalpaper", "endpoint": "stub",
                                                                "upload": upload})
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["priority"], body["queue"]) == (0, "judge")
    job = Job.objects.get(pk=body["job"])
    assert job.kind == "judge" and job.config["submission"] == body["submission"]


def test_an_upload_with_path_traversal_is_refused_with_the_reason(client_for, stub):
    make_paper_with_rubric("p1")
    make_endpoint(stub.base_url, name="stub")
    upload = zip_bytes({"../../escape.py": b"evil"})
    response = client_for("operator").post("/api/judge-runs/", {"paper": "p1", "endpoint": "stub", "upload": upload})
    assert response.status_code == 400
    assert "leaves the submission folder" in str(response.json())
    assert not Job.objects.exists()


def test_a_stored_submission_outside_the_submissions_folder_is_refused(client_for, stub):
    make_paper_with_rubric("p1")
    make_endpoint(stub.base_url, name="stub")
    response = client_for("operator").post(
        "/api/judge-runs/", {"paper": "p1", "endpoint": "stub", "submission": "../"}, content_type="application/json"
    )
    assert response.status_code == 400


def test_a_judge_run_shows_totals_and_every_leaf_prompt_and_answer(client_for, stub, personas):
    from apps.judging.services import request_judge_run
    from tests.judging.test_judge_runs import run_job_inline

    paper, _ = make_paper_with_rubric("p1")
    job = request_judge_run(paper=paper, endpoint=make_endpoint(stub.base_url, name="stub"),
                            submission=stored_submission(), user=personas["operator"])
    run_id = run_job_inline(job)["judge_run"]
    viewer = client_for("viewer")
    detail = viewer.get(f"/api/judge-runs/{run_id}/").json()
    assert detail["n_leaves"] == 5 and detail["cost_usd"] > 0 and len(detail["node_scores"]["scores"]) == 9
    grades = viewer.get(f"/api/judge-runs/{run_id}/grades/").json()["results"]
    assert len(grades) == 5
    assert grades[0]["prompt"][0]["role"] == "system" and grades[0]["response"]


def test_a_run_exports_as_a_paperbench_graded_tree_with_invalid_ancestors(client_for, stub, personas):
    from apps.judging.services import request_judge_run
    from tests.judging.test_judge_runs import run_job_inline

    stub.state.malformed_when = "Images are normalised"
    paper, version = make_paper_with_rubric("p1")
    job = request_judge_run(paper=paper, endpoint=make_endpoint(stub.base_url, name="stub"),
                            submission=stored_submission(), user=personas["operator"])
    run_id = run_job_inline(job)["judge_run"]
    tree = client_for("viewer").get(f"/api/judge-runs/{run_id}/graded-tree/").json()
    assert tree["id"] == version.tree["id"] and tree["valid_score"] is False
    assert tree["judge_metadata"] == {"invalid_leaves": 1, "graded_leaves": 5}
    data = tree["sub_tasks"][0]
    assert data["sub_tasks"][1]["valid_score"] is False and data["sub_tasks"][1]["score"] == 0.0
    assert tree["sub_tasks"][1]["valid_score"] is True


@pytest.mark.parametrize("action", ["graded-tree", "grades"])
def test_a_judge_run_id_that_is_not_a_number_is_a_404(client_for, action):
    response = client_for("viewer").get(f"/api/judge-runs/abc/{action}/")
    assert response.status_code == 404 and response.json() == {"detail": "Not found."}
