from __future__ import annotations

from apps.judging.llm import EndpointConfig, make_client
from apps.judging.llm.local import check_model_folder


def test_local_transformers_backend_generates_and_counts_tokens_on_a_tiny_model(tmp_path):
    from tests.support.tiny_model import build_tiny_chat_model

    folder = build_tiny_chat_model(tmp_path / "tiny-qwen2")
    assert check_model_folder(str(folder)) == []
    cfg = EndpointConfig(
        name="tiny-local", model=str(folder), backend="transformers", params={"max_tokens": 6},
        price_input_per_m=1.0, price_output_per_m=2.0,
    )
    client = make_client(cfg)
    result = client.chat([{"role": "user", "content": "Grade this criterion."}])
    record = result.record
    assert isinstance(result.text, str)
    assert 1 <= record.completion_tokens <= 6
    assert record.prompt_tokens > 0 and not record.usage_estimated
    assert record.cost_usd == (record.prompt_tokens * 1.0 + record.completion_tokens * 2.0) / 1e6
    assert record.ok


def test_a_folder_without_a_model_is_reported_without_loading_torch(tmp_path):
    assert check_model_folder(str(tmp_path / "nope")) == [f"{tmp_path / 'nope'} is not a folder"]
    assert "config.json is missing" in check_model_folder(str(tmp_path))
