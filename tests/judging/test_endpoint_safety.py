"""Model endpoints are hostile: the key variables they may name, the URLs they may call, what of a
reply comes back (issue 16, findings 2 and 11). The loopback stub records what it was sent."""

from __future__ import annotations

import gzip
import json
import time

import pytest
from django.conf import settings
from django.test import override_settings

from apps.judging.llm import (
    ChatClient,
    EndpointConfig,
    EndpointConfigError,
    LLMBadResponse,
    LLMRequestRejected,
    LLMUnavailable,
)
from apps.judging.models import ModelEndpoint
from tests.judging.helpers import make_endpoint, make_paper_with_rubric, stored_submission
from tests.support.openai_stub import OpenAIStub

pytestmark = pytest.mark.django_db
MESSAGES = [{"role": "user", "content": "hello"}]
SECRET = "s3cret-value-that-must-never-leave-the-server"
INTERNAL_PAGE = b"<html><title>Site administration</title><p>INTERNAL-ADMIN-PAGE csrftoken=abc123</p></html>"


def create(client, **fields):
    values = {"name": "ep", "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", **fields}
    return client.post("/api/model-endpoints/", values, content_type="application/json")


def connection_test(client, name="ep"):
    return client.post(f"/api/model-endpoints/{name}/test-connection/")


def authorizations(stub: OpenAIStub) -> list[str]:
    return [hit["headers"].get("Authorization", "") for hit in stub.hits]


# --- Key variables ------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["SECRET_KEY", "DATABASE_URL", "HOME", "OPENAI_API_KEY"])
def test_an_endpoint_may_not_name_a_variable_outside_the_allowed_ones(client_for, variable):
    response = create(client_for("operator"), api_key_env=variable)
    assert response.status_code == 400
    message = " ".join(response.json()["api_key_env"])
    assert f"${variable} is not an allowed key variable" in message and "KLONG_ENDPOINT_KEY_" in message
    assert not ModelEndpoint.objects.exists()


def test_the_page_form_refuses_a_server_secret_as_the_key_variable(client_for):
    response = client_for("operator").post("/judging/endpoints/", {
        "name": "leak", "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
        "api_key_env": "SECRET_KEY", "params": "{}", "price_input_per_m": "0", "price_output_per_m": "0",
        "concurrency": "1", "timeout_s": "10", "max_retries": "0",
    })
    assert response.status_code == 400 and "is not an allowed key variable" in response.content.decode()
    assert not ModelEndpoint.objects.exists()


def test_names_under_the_prefix_and_names_the_admin_listed_are_allowed(client_for):
    operator = client_for("operator")
    assert create(operator, name="a", api_key_env="KLONG_ENDPOINT_KEY_VLLM").status_code == 201
    with override_settings(KLONG_ENDPOINT_KEY_VARS=["OPENAI_API_KEY"]):
        assert create(operator, name="b", api_key_env="OPENAI_API_KEY").status_code == 201
    assert create(operator, name="c", api_key_env="KLONG_ENDPOINT_KEY_").status_code == 400


@override_settings(KLONG_ENDPOINT_KEY_VARS=["SECRET_KEY"])
def test_no_allow_list_lets_an_endpoint_send_the_servers_own_secret(client_for):
    assert create(client_for("operator"), api_key_env="SECRET_KEY").status_code == 400


def test_a_refused_name_says_nothing_of_whether_the_server_has_it(client_for, stub, monkeypatch):
    monkeypatch.setenv("KLONG_PROBE_SET", "x")
    monkeypatch.delenv("KLONG_PROBE_UNSET", raising=False)
    operator = client_for("operator")
    answers = []
    for variable in ("KLONG_PROBE_SET", "KLONG_PROBE_UNSET"):
        created = create(operator, api_key_env=variable)
        endpoint = make_endpoint(stub.base_url, name="probe", api_key_env=variable)
        tested = connection_test(operator, "probe")
        endpoint.delete()
        assert (created.status_code, tested.status_code) == (400, 400)
        answers.append((created.content + tested.content).decode().replace(variable, "NAME"))
    assert answers[0] == answers[1]
    assert stub.hits == []


@pytest.mark.parametrize("variable", ["SECRET_KEY", "DATABASE_URL"])
def test_a_row_saved_before_the_rule_never_sends_a_server_secret(client_for, stub, monkeypatch, variable):
    monkeypatch.setenv(variable, SECRET)
    make_endpoint(stub.base_url, name="old", api_key_env=variable)  # as saved before the rule: no validation
    response = connection_test(client_for("operator"), "old")
    assert response.status_code == 400
    assert f"${variable} is not an allowed key variable" in response.json()["message"]
    assert SECRET not in response.content.decode()
    assert stub.hits == [] and not any(SECRET in auth for auth in authorizations(stub))
    endpoint = ModelEndpoint.objects.get(name="old")
    assert endpoint.api_key_env == variable and endpoint.last_test_ok is False  # kept as stored, and failed


def test_a_judge_job_on_such_a_row_fails_with_the_reason_and_sends_nothing(stub, personas, monkeypatch):
    from apps.judging.services import request_judge_run
    from tests.judging.test_judge_runs import run_job_inline

    monkeypatch.setenv("SECRET_KEY", SECRET)
    paper, _ = make_paper_with_rubric("p1")
    endpoint = make_endpoint(stub.base_url, name="old", api_key_env="SECRET_KEY")
    job = request_judge_run(paper=paper, endpoint=endpoint, submission=stored_submission(), user=personas["operator"])
    with pytest.raises(EndpointConfigError, match=r"\$SECRET_KEY is not an allowed key variable"):
        run_job_inline(job)
    assert stub.hits == []


def test_an_allowed_key_is_sent_as_the_bearer_token(client_for, stub, monkeypatch):
    monkeypatch.setenv("KLONG_ENDPOINT_KEY_STUB", "sk-allowed")
    make_endpoint(stub.base_url, name="ok", api_key_env="KLONG_ENDPOINT_KEY_STUB")
    assert connection_test(client_for("operator"), "ok").json()["ok"] is True
    assert authorizations(stub) == ["Bearer sk-allowed"]


def test_editing_a_row_saved_before_the_rule_keeps_it_and_refuses_only_a_bad_change(client_for, stub):
    make_endpoint(stub.base_url, name="old", api_key_env="SECRET_KEY", params=["legacy"])
    operator = client_for("operator")
    url = "/api/model-endpoints/old/"
    assert operator.patch(url, {"description": "noted"}, content_type="application/json").status_code == 200
    assert operator.patch(url, {"api_key_env": "DATABASE_URL"}, content_type="application/json").status_code == 400
    endpoint = ModelEndpoint.objects.get(name="old")
    assert (endpoint.api_key_env, endpoint.params, endpoint.description) == ("SECRET_KEY", ["legacy"], "noted")
    fixed = operator.patch(url, {"api_key_env": "KLONG_ENDPOINT_KEY_OLD", "params": {}}, content_type="application/json")
    assert fixed.status_code == 200 and fixed.json()["api_key_env"] == "KLONG_ENDPOINT_KEY_OLD"


# --- Redirects and what of a reply comes back ----------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed(client_for, stub, monkeypatch, status):
    monkeypatch.setenv("KLONG_ENDPOINT_KEY_STUB", SECRET)
    with OpenAIStub() as target:
        stub.reply_with(status, Location=target.base_url + "/chat/completions")
        make_endpoint(stub.base_url, name="hop", api_key_env="KLONG_ENDPOINT_KEY_STUB")
        response = connection_test(client_for("operator"), "hop")
        with pytest.raises(LLMRequestRejected, match="redirects to another address"):
            ChatClient(ModelEndpoint.objects.get(name="hop").to_config()).chat(MESSAGES)
        assert target.hits == []
    assert response.status_code == 400
    assert f"HTTP {status}" in response.json()["message"] and "give the final URL" in response.json()["message"]
    assert len(stub.hits) == 2


def test_a_redirect_to_a_file_url_is_a_400_not_a_500(client_for, stub):
    stub.reply_with(302, Location="file:///etc/passwd")
    make_endpoint(stub.base_url, name="hop")
    response = connection_test(client_for("operator"), "hop")
    assert response.status_code == 400 and "redirects to another address" in response.json()["message"]
    assert "root:" not in response.content.decode()


@pytest.mark.parametrize("status", [200, 403, 404, 500])
def test_the_body_of_an_internal_page_never_comes_back(client_for, stub, status):
    stub.reply_with(status, INTERNAL_PAGE, Content_Type="text/html")
    make_endpoint(stub.base_url, name="internal")
    operator = client_for("operator")
    answers = [connection_test(operator, "internal"), operator.post("/judging/endpoints/internal/test/")]
    for response in answers:
        assert response.status_code == 200
        assert b"INTERNAL-ADMIN-PAGE" not in response.content and b"administration" not in response.content
    body = answers[0].json()
    assert body["ok"] is False and body["reply"] == ""
    expected = "not an OpenAI-compatible API" if status == 200 else f"reachable, but it answered HTTP {status}"
    assert expected in body["message"]
    assert "INTERNAL-ADMIN-PAGE" not in ModelEndpoint.objects.get(name="internal").last_test_message


def test_a_judge_call_reports_an_openai_error_message_but_nothing_else_of_a_reply(stub):
    config = EndpointConfig(name="e", base_url=stub.base_url, model="m", max_retries=0)
    stub.reply_with(400, json.dumps({"error": {"message": "maximum context length is 8192 tokens"}}).encode())
    with pytest.raises(LLMRequestRejected, match="^HTTP 400: maximum context length is 8192 tokens$"):
        ChatClient(config).chat(MESSAGES)
    stub.reply_with(404, INTERNAL_PAGE)
    with pytest.raises(LLMRequestRejected, match="^HTTP 404$"):
        ChatClient(config).chat(MESSAGES)
    stub.reply_with(200, json.dumps({"page": INTERNAL_PAGE.decode()}).encode())
    with pytest.raises(LLMBadResponse) as caught:
        ChatClient(config).chat(MESSAGES)
    assert "INTERNAL-ADMIN-PAGE" not in str(caught.value) and "not an OpenAI-compatible" in str(caught.value)


@pytest.mark.parametrize("framing", [
    {}, {"Content_Length": ""}, {"Content_Encoding": "gzip"},
], ids=["declared", "undeclared", "gzip-bomb"])
@override_settings(KLONG_ENDPOINT_MAX_REPLY_BYTES=64 * 1024)
def test_a_reply_over_the_size_limit_is_refused_unread(stub, framing):
    body = b'{"choices": [], "pad": "' + b"a" * 10_000_000 + b'"}'
    stub.reply_with(200, gzip.compress(body) if framing.get("Content_Encoding") else body, **framing)
    config = EndpointConfig(name="big", base_url=stub.base_url, model="m", max_retries=0)
    with pytest.raises(LLMBadResponse, match=r"larger than 65536 bytes \(KLONG_ENDPOINT_MAX_REPLY_BYTES\)"):
        ChatClient(config).chat(MESSAGES)


def test_a_reply_sent_a_byte_at_a_time_is_cut_off_at_the_timeout(stub):
    stub.reply_with(200, b'{"choices": [{"message": {"content": "' + b"x" * 200 + b'"}}]}', drip_s=0.02)
    config = EndpointConfig(name="slow", base_url=stub.base_url, model="m", max_retries=0, timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="timed out"):
        ChatClient(config).chat(MESSAGES)
    assert time.monotonic() - started < 1.5  # the whole reply would take 4.7 s


# --- Bad URLs and params (finding 11): a 400 with a message, never a 500 ------------------------

BAD_URLS = {
    "file": "file:///etc/passwd", "gopher": "gopher://127.0.0.1:70/_x", "no-scheme": "127.0.0.1:8000/v1",
    "open-bracket": "http://[::1", "no-host": "http:///v1", "bad-port": "http://127.0.0.1:99999/v1",
    "query": "http://127.0.0.1:9/admin/?x=", "credentials": "http://user:pw@127.0.0.1:9/v1",
    "space": "http://127.0.0.1:9/v 1", "empty-label": "http://.example/v1", "not-idna": "http://\u2603" + "a" * 70 + ".com/v1",
}


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_a_bad_base_url_is_refused_when_saved_and_when_tested(client_for, url):
    operator = client_for("operator")
    created = create(operator, base_url=url)
    assert created.status_code == 400 and created.json()["base_url"]
    make_endpoint(url, name="old")
    tested = connection_test(operator, "old")
    assert tested.status_code == 400 and "base URL" in tested.json()["message"]
    page = operator.post("/judging/endpoints/old/test/")
    assert page.status_code == 200 and "base URL" in page.content.decode()


@pytest.mark.parametrize("params", [["temperature", 0], "temperature=0", 3], ids=["list", "string", "number"])
def test_params_that_are_not_an_object_are_refused_when_saved_and_when_tested(client_for, stub, params):
    operator = client_for("operator")
    created = create(operator, params=params)
    assert created.status_code == 400 and "params must be a JSON object" in " ".join(created.json()["params"])
    make_endpoint(stub.base_url, name="old", params=params)
    tested = connection_test(operator, "old")
    assert tested.status_code == 400 and "params must be a JSON object" in tested.json()["message"]
    assert stub.hits == []


def test_params_take_generation_options_only(client_for):
    operator = client_for("operator")
    assert create(operator, name="a", params={"temperature": 0, "max_tokens": 64}).status_code == 201
    refused = create(operator, name="b", params={"stream": True, "temprature": 0})
    assert refused.status_code == 400 and "unknown option(s) stream, temprature" in " ".join(refused.json()["params"])


def test_the_page_form_refuses_params_that_are_not_an_object(client_for):
    response = client_for("operator").post("/judging/endpoints/", {
        "name": "p", "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "params": "[1, 2]",
        "price_input_per_m": "0", "price_output_per_m": "0", "concurrency": "1", "timeout_s": "10", "max_retries": "0",
    })
    assert response.status_code == 400 and "params must be a JSON object" in response.content.decode()


def test_the_settings_refuse_a_key_policy_that_opens_a_server_secret():
    from apps.judging.llm.config import KeyPolicy

    assert settings.KLONG_ENDPOINT_KEY_PREFIX == "KLONG_ENDPOINT_KEY_"
    for prefix, names in (("", ()), ("KLONG_", ()), ("X_", ("AWS_SECRET_ACCESS_KEY",)), ("X_", ("not a name",))):
        with pytest.raises(EndpointConfigError):
            KeyPolicy(prefix, frozenset(names)).check()


def test_more_retries_than_the_limit_are_refused_when_saved(client_for):
    operator = client_for("operator")
    response = create(operator, max_retries=101)
    assert response.status_code == 400 and "between 0 and 100" in " ".join(response.json()["max_retries"])
    assert create(operator, max_retries=100).status_code == 201
    assert operator.patch("/api/model-endpoints/ep/", {"max_retries": 5000},
                          content_type="application/json").status_code == 400
    page = operator.post("/judging/endpoints/", {
        "name": "many", "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "",
        "params": "{}", "price_input_per_m": "0", "price_output_per_m": "0", "concurrency": "1", "timeout_s": "10",
        "max_retries": "1000",
    })
    assert page.status_code == 400 and "between 0 and 100" in page.content.decode()
    assert list(ModelEndpoint.objects.values_list("max_retries", flat=True)) == [100]
