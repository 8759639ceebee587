from __future__ import annotations

import pytest

from tests.support.openai_stub import OpenAIStub


@pytest.fixture
def stub():
    """The loopback OpenAI-compatible server: the one stand-in for remote model APIs."""
    with OpenAIStub() as server:
        yield server
