"""Model endpoints: configuration, the HTTP chat client and a local transformers backend."""

from __future__ import annotations

from worker.llm.client import ChatClient, backoff_delay, make_client
from worker.llm.config import EndpointConfig, EndpointConfigError
from worker.llm.records import CallRecord, ChatResult, LLMBadResponse, LLMError, LLMRequestRejected, LLMUnavailable

__all__ = [
    "CallRecord", "ChatClient", "ChatResult", "EndpointConfig", "EndpointConfigError", "LLMBadResponse",
    "LLMError", "LLMRequestRejected", "LLMUnavailable", "backoff_delay", "make_client",
]
