from __future__ import annotations

import threading
import time

import pytest

from apps.judging.llm import (
    ChatClient,
    EndpointConfig,
    EndpointConfigError,
    LLMRequestRejected,
    LLMUnavailable,
    backoff_delay,
)
from tests.support.openai_stub import OpenAIStub, answer_for, prompt_tokens, stub_tokens

MESSAGES = [{"role": "user", "content": "Say hello to the judge."}]


def config(stub: OpenAIStub, **overrides) -> EndpointConfig:
    values = {"name": f"stub-{id(stub)}", "base_url": stub.base_url, "model": "stub-model", "max_retries": 3}
    values.update(overrides)
    return EndpointConfig(**values)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_429_and_500_are_retried_with_growing_backoff(stub):
    stub.fail_next(429, 500)
    sleeps = Sleeps()
    client = ChatClient(config(stub, backoff_base_s=1.0), sleep=sleeps, rng=lambda: 0.0)
    result = client.chat(MESSAGES)
    assert result.text == answer_for(MESSAGES)
    assert result.record.attempts == 3
    assert result.record.errors[0].startswith("HTTP 429") and result.record.errors[1].startswith("HTTP 500")
    # Equal jitter with rng=0: half of base * 2**(attempt-1).
    assert sleeps == [0.5, 1.0]


def test_backoff_is_capped_and_jittered_within_half_to_full_ceiling():
    assert backoff_delay(10, 1.0, 8.0, rng=lambda: 0.0) == 4.0
    assert backoff_delay(10, 1.0, 8.0, rng=lambda: 1.0) == 8.0
    assert backoff_delay(3, 1.0, 60.0, rng=lambda: 0.5) == 3.0


def test_retry_after_header_sets_the_minimum_wait(stub):
    stub.fail_next(429, retry_after=7)
    sleeps = Sleeps()
    ChatClient(config(stub), sleep=sleeps, rng=lambda: 0.0).chat(MESSAGES)
    assert sleeps == [7.0]


def test_gives_up_after_max_retries_with_every_error_recorded(stub):
    stub.fail_next(503, 503, 503, 503)
    client = ChatClient(config(stub, max_retries=2), sleep=Sleeps())
    with pytest.raises(LLMUnavailable) as caught:
        client.chat(MESSAGES)
    assert caught.value.record.attempts == 3
    assert len(caught.value.record.errors) == 3
    assert len(stub.requests) == 3


def test_a_400_is_not_retried(stub):
    stub.fail_next(400)
    client = ChatClient(config(stub), sleep=Sleeps())
    with pytest.raises(LLMRequestRejected):
        client.chat(MESSAGES)
    assert len(stub.requests) == 1


def test_an_endpoint_that_is_down_raises_unavailable_after_retries(stub):
    cfg = config(stub, max_retries=1)
    stub.down()
    with pytest.raises(LLMUnavailable, match="cannot connect") as caught:
        ChatClient(cfg, sleep=Sleeps()).chat(MESSAGES)
    assert caught.value.record.attempts == 2


def test_a_slow_endpoint_times_out_and_is_retried(stub):
    stub.state.delay_s = 0.5
    client = ChatClient(config(stub, timeout_s=0.1, max_retries=1), sleep=Sleeps())
    with pytest.raises(LLMUnavailable, match="timed out"):
        client.chat(MESSAGES)


def test_cost_is_computed_from_reported_usage_and_prices(stub):
    client = ChatClient(config(stub, price_input_per_m=2.5, price_output_per_m=10.0))
    record = client.chat(MESSAGES).record
    expected_prompt, expected_completion = prompt_tokens(MESSAGES), stub_tokens(answer_for(MESSAGES))
    assert (record.prompt_tokens, record.completion_tokens) == (expected_prompt, expected_completion)
    assert record.cost_usd == pytest.approx((expected_prompt * 2.5 + expected_completion * 10.0) / 1e6)
    assert record.ok and not record.usage_estimated and record.latency_s > 0


def test_missing_usage_is_estimated_and_flagged(stub):
    stub.state.no_usage = True
    record = ChatClient(config(stub)).chat(MESSAGES).record
    assert record.usage_estimated
    assert record.prompt_tokens > 0 and record.completion_tokens > 0


def test_concurrent_calls_never_exceed_the_endpoint_limit(stub):
    stub.state.delay_s = 0.1
    cfg = config(stub, concurrency=2)
    # Two clients of one endpoint share its limit.
    clients = [ChatClient(cfg), ChatClient(cfg)]
    threads = [threading.Thread(target=clients[i % 2].chat, args=(MESSAGES,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stub.requests) == 8
    assert stub.state.max_in_flight == 2


def test_the_snapshot_names_the_key_variable_but_never_holds_the_key(stub, monkeypatch):
    monkeypatch.setenv("KLONG_ENDPOINT_KEY_TEST_JUDGE", "sk-secret-value")
    cfg = config(stub, api_key_env="KLONG_ENDPOINT_KEY_TEST_JUDGE")
    assert cfg.api_key() == "sk-secret-value"
    snapshot = cfg.snapshot()
    assert snapshot["api_key_env"] == "KLONG_ENDPOINT_KEY_TEST_JUDGE"
    assert "sk-secret-value" not in repr(snapshot)
    assert EndpointConfig.from_snapshot(snapshot) == cfg


def test_a_missing_key_variable_is_a_configuration_error(stub, monkeypatch):
    monkeypatch.delenv("KLONG_ENDPOINT_KEY_TEST_MISSING", raising=False)
    client = ChatClient(config(stub, api_key_env="KLONG_ENDPOINT_KEY_TEST_MISSING"))
    with pytest.raises(EndpointConfigError, match="KLONG_ENDPOINT_KEY_TEST_MISSING"):
        client.chat(MESSAGES)


def test_a_call_waiting_out_a_backoff_frees_its_endpoint_slot(stub):
    stub.fail_next(503)
    cfg = config(stub, concurrency=1)
    order: list[str] = []
    other_done = threading.Event()

    def wait(seconds: float) -> None:
        order.append("first waits")
        other_done.wait(5)
        order.append("first resumes")

    first = threading.Thread(target=ChatClient(cfg, sleep=wait).chat, args=(MESSAGES,))
    first.start()
    while not order:
        time.sleep(0.01)
    ChatClient(cfg).chat(MESSAGES)  # needs the endpoint's only slot
    order.append("second done")
    other_done.set()
    first.join()
    assert order == ["first waits", "second done", "first resumes"]


def test_latency_is_the_answering_attempts_and_total_time_includes_the_backoff(stub):
    stub.fail_next(500)
    record = ChatClient(config(stub), sleep=time.sleep, rng=lambda: 0.0).chat(MESSAGES).record  # waits 0.5 s
    assert record.attempts == 2 and record.total_s >= 0.5
    assert 0 < record.latency_s < 0.4


def test_a_failed_reply_is_read_only_for_its_message_and_within_the_timeout_before_a_retry(stub):
    # Every reply: 503 with a body sent a byte every 20 ms (4 s in all). Reading it whole before
    # each retry (urllib3's drain) would take 8 s here; the client gives each read the timeout.
    stub.reply_with(503, b'{"error": {"message": "' + b"x" * 200 + b'"}}', drip_s=0.02)
    client = ChatClient(config(stub, timeout_s=0.3, max_retries=2), sleep=Sleeps())
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="gave up after 3 attempt") as caught:
        client.chat(MESSAGES)
    assert time.monotonic() - started < 2.5
    assert caught.value.record.errors == ["HTTP 503"] * 3 and len(stub.hits) == 3


def test_more_retries_than_the_limit_are_refused(stub):
    with pytest.raises(EndpointConfigError, match="max_retries must be between 0 and 100"):
        config(stub, max_retries=101)


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_a_thinking_models_reasoning_comes_back_beside_its_answer(stub, key):
    # reasoning_content: vLLM's reasoning parsers, SGLang, DeepSeek; reasoning: OpenRouter, newer vLLM
    stub.state.responder = lambda body: {"content": "The answer is 4.", key: "2 + 2: add the units."}
    result = ChatClient(config(stub)).chat(MESSAGES)
    assert (result.text, result.reasoning) == ("The answer is 4.", "2 + 2: add the units.")


def test_reasoning_that_is_not_text_is_ignored_and_counts_in_estimated_usage(stub):
    stub.state.responder = lambda body: {"content": "4", "reasoning_content": {"steps": [1]}, "reasoning": "r" * 400}
    stub.state.no_usage = True
    result = ChatClient(config(stub)).chat(MESSAGES)
    assert result.reasoning == "r" * 400 and result.record.completion_tokens == 1 + 100
