"""Model endpoint configuration (pure Python, no Django).

An ``EndpointConfig`` is what a judge run snapshots: everything needed to call the same model the
same way again, except the API key. Only the *name* of the environment variable that holds the
key is stored, so a snapshot can be shown, exported and diffed without leaking a secret.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

BACKENDS = ("openai", "transformers")


class EndpointConfigError(ValueError):
    """The endpoint is configured in a way that cannot work (missing key variable, bad backend)."""


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    name: str
    model: str
    # "openai": any OpenAI-compatible /v1/chat/completions server (OpenAI, vLLM, SGLang, a proxy);
    # "transformers": ``model`` is a local model folder loaded in-process.
    backend: str = "openai"
    base_url: str = ""
    api_key_env: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # default request parameters
    price_input_per_m: float = 0.0  # USD per million prompt tokens
    price_output_per_m: float = 0.0  # USD per million completion tokens
    concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 4
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise EndpointConfigError(f"Unknown backend {self.backend!r}; known: {', '.join(BACKENDS)}.")
        if self.backend == "openai" and not self.base_url:
            raise EndpointConfigError(f"Endpoint {self.name!r} needs a base URL.")
        if self.concurrency < 1:
            raise EndpointConfigError("concurrency must be at least 1.")
        if self.max_retries < 0:
            raise EndpointConfigError("max_retries cannot be negative.")
        if self.timeout_s <= 0:
            raise EndpointConfigError("timeout_s must be positive.")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Cost in USD of one call with these token counts."""
        return (prompt_tokens * self.price_input_per_m + completion_tokens * self.price_output_per_m) / 1_000_000

    def api_key(self) -> str | None:
        """The key, read from the environment at call time (None when no variable is named)."""
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise EndpointConfigError(
                f"Endpoint {self.name!r} reads its API key from ${self.api_key_env}, which is not set."
            )
        return key

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready copy for a judge run's record; it never contains the key itself."""
        return asdict(self)

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> EndpointConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})
