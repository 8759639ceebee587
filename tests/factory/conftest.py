from __future__ import annotations

import pytest

from tests.support.openai_stub import OpenAIStub


@pytest.fixture
def stub():
    """The loopback OpenAI-compatible server (same as tests/judging's): teacher, drafter and judge."""
    with OpenAIStub() as server:
        yield server


def make_endpoint(name: str, stub: OpenAIStub, **fields):
    from apps.judging.models import ModelEndpoint

    return ModelEndpoint.objects.create(name=name, base_url=stub.base_url, model=f"{name}-model", max_retries=0,
                                        price_input_per_m=1.0, price_output_per_m=2.0, **fields)
