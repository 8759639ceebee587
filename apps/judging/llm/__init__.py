"""Model endpoints: configuration, the HTTP chat client and a local transformers backend."""

from __future__ import annotations

from apps.judging.llm.client import ChatClient, backoff_delay, make_client
from apps.judging.llm.config import EndpointConfig, EndpointConfigError
from apps.judging.llm.records import (
    CallRecord,
    ChatResult,
    LLMBadResponse,
    LLMError,
    LLMRequestRejected,
    LLMUnavailable,
)

__all__ = [
    "CallRecord", "ChatClient", "ChatResult", "EndpointConfig", "EndpointConfigError", "LLMBadResponse",
    "LLMError", "LLMRequestRejected", "LLMUnavailable", "backoff_delay", "make_client",
]
