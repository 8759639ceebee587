from __future__ import annotations

import pytest

from apps.judging.models import JudgeRun, ModelEndpoint
from apps.judging.services import request_judge_run
from tests.judging.helpers import leaf, make_endpoint, make_paper_with_rubric, node, stored_submission
from tests.judging.test_judge_runs import run_job_inline

pytestmark = pytest.mark.django_db


@pytest.fixture
def judged_run(stub, personas) -> JudgeRun:
    stub.state.malformed_when = "normalised"
    tree = node("root", node("Data", leaf("<script>alert(1)</script> loader"), leaf("Images are normalised")),
                leaf("Training runs", "Code Execution"))
    paper, _ = make_paper_with_rubric("paged", tree=tree)
    job = request_judge_run(paper=paper, endpoint=make_endpoint(stub.base_url), submission=stored_submission(),
                            user=personas["operator"])
    return JudgeRun.objects.get(pk=run_job_inline(job)["judge_run"])


@pytest.mark.parametrize("url", ["/judging/", "/judging/endpoints/"])
def test_outsiders_cannot_see_judging_pages(client_for, url):
    assert client_for("outsider").get(url).status_code == 403


def test_the_run_list_links_runs_with_invalid_counts_and_cost(client_for, judged_run):
    html = client_for("viewer").get("/judging/").content.decode()
    assert f'href="/judging/runs/{judged_run.pk}/"' in html
    assert 'state-failed">1<' in html


def test_the_run_page_shows_the_score_tree_with_invalid_counts_on_ancestors(client_for, judged_run):
    response = client_for("viewer").get(f"/judging/runs/{judged_run.pk}/")
    html = response.content.decode()
    assert response.status_code == 200
    assert html.count('class="has-invalid"') == 3  # the invalid leaf, "Data" and the root
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html
    assert f"/judging/runs/{judged_run.pk}/leaves/" in html


def test_a_leaf_shows_its_full_prompt_and_answer_escaped(client_for, judged_run):
    grade = judged_run.grades.get(valid_score=True, node_index=2)
    html = client_for("viewer").get(f"/judging/runs/{judged_run.pk}/leaves/{grade.node_index}/").content.decode()
    assert "Expectations:" in html and "Full prompt" in html
    assert "<script>alert(1)" not in html


def test_an_invalid_leaf_shows_why(client_for, judged_run):
    grade = judged_run.grades.get(valid_score=False)
    html = client_for("viewer").get(f"/judging/runs/{judged_run.pk}/leaves/{grade.node_index}/").content.decode()
    assert "Invalid: no usable verdict" in html and "Earlier unusable answers" in html


def test_viewers_see_endpoints_without_the_form_or_test_button(client_for, stub):
    make_endpoint(stub.base_url, name="stub")
    html = client_for("viewer").get("/judging/endpoints/").content.decode()
    assert "stub" in html and "Test connection" not in html and "endpoint-form" not in html


def test_viewers_cannot_add_or_test_endpoints(client_for, stub):
    make_endpoint(stub.base_url, name="stub")
    viewer = client_for("viewer")
    assert viewer.post("/judging/endpoints/", {"name": "x"}).status_code == 403
    assert viewer.post("/judging/endpoints/stub/test/").status_code == 403


def test_operators_add_an_endpoint_through_the_form(client_for):
    response = client_for("operator").post("/judging/endpoints/", {
        "name": "gpt-oss", "backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "gpt-oss-120b",
        "api_key_env": "KLONG_ENDPOINT_KEY_VLLM", "params": "{}", "price_input_per_m": "0.1", "price_output_per_m": "0.5",
        "concurrency": "64", "timeout_s": "120", "max_retries": "4",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    assert ModelEndpoint.objects.get(name="gpt-oss").concurrency == 64


def test_an_http_endpoint_without_a_url_is_refused_by_the_form(client_for):
    response = client_for("operator").post("/judging/endpoints/", {
        "name": "nourl", "backend": "openai", "model": "m", "params": "{}", "price_input_per_m": "0",
        "price_output_per_m": "0", "concurrency": "1", "timeout_s": "10", "max_retries": "0",
    })
    assert response.status_code == 400 and "needs a base URL" in response.content.decode()


def test_the_test_connection_button_shows_the_outcome(client_for, stub):
    make_endpoint(stub.base_url, name="stub")
    html = client_for("operator").post("/judging/endpoints/stub/test/").content.decode()
    assert "dot ok" in html and "answered in" in html


@pytest.mark.parametrize("kind", ["judge", "judge_eval"])
def test_the_judge_kinds_have_launch_forms_on_the_jobs_page(client_for, kind):
    response = client_for("operator").get(f"/jobs/new/?kind={kind}")
    assert response.status_code == 200
    assert 'name="config-endpoint"' in response.content.decode()
