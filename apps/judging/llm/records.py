"""What one model call cost and returned (pure Python)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from apps.core.domain import Unavailable


@dataclass(slots=True)
class CallRecord:
    """Token usage, cost and latency of one logical call (all its retries together)."""

    endpoint: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0  # wall time of the successful attempt
    total_s: float = 0.0  # wall time including failed attempts and backoff
    attempts: int = 0
    # True when the server reported no usage and the counts are a characters/4 estimate.
    usage_estimated: bool = False
    errors: list[str] = field(default_factory=list)  # one line per failed attempt
    ok: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class ChatResult:
    text: str
    record: CallRecord
    finish_reason: str | None = None
    # OpenAI-shaped tool calls ({"id", "type": "function", "function": {"name", "arguments"}})
    # when the server returned structured ones; the agent reads calls from the text otherwise.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    # The model's visible chain of thought when the server returns it apart from the answer
    # (``reasoning_content``: vLLM, SGLang, DeepSeek; ``reasoning``: OpenRouter, newer vLLM).
    reasoning: str = ""
    # Token-in/token-out (an RL policy): the ids the engine sampled for this answer, end-of-turn
    # token included when sampled, and the engine's log-prob of each; empty when it did not say.
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


class LLMError(Unavailable):
    """A call failed for good; ``record`` tells what was tried, ``status`` the HTTP status of the
    last reply (None when there was none: refused connection, timeout)."""

    def __init__(self, message: str, record: CallRecord | None = None, *, status: int | None = None) -> None:
        super().__init__(message)
        self.record = record
        self.status = status


class LLMUnavailable(LLMError):
    """Still failing after every retry (endpoint down, rate-limited, timing out, 5xx)."""


class LLMRequestRejected(LLMError):
    """The server refused the request itself (4xx other than 408/429), or redirected it: retrying cannot help."""


class LLMBadResponse(LLMError):
    """The server answered 200 with a body that is not a chat completion, or one too large to read."""
