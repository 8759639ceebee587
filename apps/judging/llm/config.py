"""Model endpoint configuration (pure Python, no Django).

An ``EndpointConfig`` is what a judge run snapshots: everything needed to call the same model the
same way again, except the API key. Only the *name* of the environment variable that holds the
key is stored, so a snapshot can be shown, exported and diffed without leaking a secret.

Endpoints are untrusted: whoever may add one chooses where the calls go. So the rules every
endpoint follows live here, checked when one is saved and again when it is used (a row saved
before a rule existed is held to it too): the key comes only from a variable the admin allowed
(``KeyPolicy``), the base URL is plain http(s) with a host (``check_base_url``), and the default
request parameters are a JSON object of generation options (``check_params``).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings

from apps.core.domain import Invalid

BACKENDS = ("openai", "transformers")
DEFAULT_KEY_PREFIX = "KLONG_ENDPOINT_KEY_"
DEFAULT_MAX_REPLY_BYTES = 32 * 1024 * 1024  # KLONG_ENDPOINT_MAX_REPLY_BYTES: a chat completion with logprobs fits
# urllib3 retries by calling itself once per retry (a thousand would hit Python's recursion limit);
# 100 retries at the longest backoff is over an hour and a half of trying already.
MAX_RETRIES = 100
# The server's own secrets: no endpoint may send one, whatever an admin allowed.
SERVER_SECRETS = frozenset({
    "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "KLONG_ADMIN_PASSWORD", "KLONG_METRICS_TOKEN", "POSTGRES_PASSWORD",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
})
# Sampling and output options of OpenAI's chat completions and of vLLM / SGLang (and the local
# backend's max_new_tokens). The client owns model, messages and stream.
GENERATION_PARAMS = frozenset({
    "temperature", "top_p", "top_k", "min_p", "max_tokens", "max_completion_tokens", "max_new_tokens", "min_tokens",
    "stop", "stop_token_ids", "seed", "presence_penalty", "frequency_penalty", "repetition_penalty",
    "length_penalty", "logit_bias", "logprobs", "top_logprobs", "reasoning_effort", "response_format",
    "chat_template_kwargs", "skip_special_tokens", "ignore_eos", "include_stop_str_in_output",
    "guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs", "separate_reasoning",
})
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EndpointConfigError(Invalid, ValueError):
    """The endpoint is configured in a way that cannot work (missing key variable, bad backend)."""


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """Which environment variables an endpoint may read its key from: the names that start with
    ``prefix``, and ``names`` (KLONG_ENDPOINT_KEY_PREFIX and KLONG_ENDPOINT_KEY_VARS)."""

    prefix: str = DEFAULT_KEY_PREFIX
    names: frozenset[str] = frozenset()

    def check(self) -> None:
        """Raise ``EndpointConfigError`` for a policy an admin should not start the server with."""
        if not _VARIABLE.match(self.prefix):
            raise EndpointConfigError(
                f"KLONG_ENDPOINT_KEY_PREFIX={self.prefix!r} must be the start of a variable name (letters, digits, "
                "_); list other allowed names in KLONG_ENDPOINT_KEY_VARS."
            )
        for name in sorted(self.names):
            if not _VARIABLE.match(name):
                raise EndpointConfigError(f"KLONG_ENDPOINT_KEY_VARS: {name!r} is not a variable name.")
        opened = sorted(s for s in SERVER_SECRETS if s in self.names or s.startswith(self.prefix))
        if opened:
            raise EndpointConfigError(
                f"KLONG_ENDPOINT_KEY_PREFIX / KLONG_ENDPOINT_KEY_VARS would let endpoints send {', '.join(opened)}, "
                "the server's own secret: choose another prefix or list."
            )

    def allows(self, variable: str) -> bool:
        if variable in SERVER_SECRETS:
            return False
        return variable in self.names or (variable.startswith(self.prefix) and len(variable) > len(self.prefix))

    def describe(self) -> str:
        """The allowed names, in words, for an error message."""
        text = f"names that start with {self.prefix} (e.g. {self.prefix}OPENAI)"
        if self.names:
            text += f" or are listed in KLONG_ENDPOINT_KEY_VARS ({', '.join(sorted(self.names))})"
        return text


def key_policy() -> KeyPolicy:
    """The admin's policy from Django settings when they are configured, else the default prefix."""
    try:

        if settings.configured:
            return KeyPolicy(getattr(settings, "KLONG_ENDPOINT_KEY_PREFIX", DEFAULT_KEY_PREFIX),
                             frozenset(getattr(settings, "KLONG_ENDPOINT_KEY_VARS", ())))
    except ImportError:
        pass
    return KeyPolicy()


def key_variable_problem(variable: str, policy: KeyPolicy | None = None) -> str:
    """Why an endpoint may not read its key from ``variable`` ('' when it may).

    The answer never depends on whether the variable is set, so it cannot be used to probe the
    server's environment.
    """
    policy = policy or key_policy()
    if policy.allows(variable):
        return ""
    return f"${variable} is not an allowed key variable: keys come only from {policy.describe()}."


def read_api_key(variable: str, owner: str) -> str | None:
    """The key in ``variable`` for ``owner`` (an endpoint, a policy server); None when none is named.

    Raises ``EndpointConfigError`` when the variable is not allowed, checked before the
    environment is read, and when an allowed variable is not set.
    """
    if not variable:
        return None
    problem = key_variable_problem(variable)
    if problem:
        raise EndpointConfigError(f"{owner}: {problem}")
    key = os.environ.get(variable)
    if not key:
        raise EndpointConfigError(f"{owner} reads its API key from ${variable}, which is not set.")
    return key


def check_base_url(url: str) -> None:
    """Raise ``EndpointConfigError`` unless ``url`` is an http(s) URL with a host that requests can call."""

    if not url or any(c.isspace() or ord(c) < 32 for c in url):
        raise EndpointConfigError("The base URL must be an http:// or https:// URL without spaces.")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number in range)
    except ValueError as exc:
        raise EndpointConfigError(f"The base URL {url!r} is not a valid URL: {str(exc).rstrip('.')}.") from None
    if parts.scheme not in ("http", "https"):
        raise EndpointConfigError(f"The base URL must start with http:// or https://, not {url[:40]!r}.")
    if not parts.hostname:
        raise EndpointConfigError(f"The base URL {url!r} names no host.")
    if parts.username or parts.password:
        raise EndpointConfigError("The base URL must not hold a user name or password: name a key variable instead.")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise EndpointConfigError("The base URL must not have a query (?) or a fragment (#): calls add "
                                  "/chat/completions to it.")
    try:
        # requests' own checks (IDNA host names, label lengths): what it refuses here it would refuse on a call.
        requests.Request("POST", url).prepare()
    except requests.RequestException as exc:
        raise EndpointConfigError(f"The base URL {url!r} is not a valid URL: {str(exc).rstrip('.')}.") from None


def check_max_retries(value: int) -> None:
    """Raise ``EndpointConfigError`` unless ``value`` is a retry count from 0 to MAX_RETRIES."""
    if not 0 <= value <= MAX_RETRIES:
        raise EndpointConfigError(f"max_retries must be between 0 and {MAX_RETRIES}, not {value}.")


def check_params(params: Any) -> None:
    """Raise ``EndpointConfigError`` unless ``params`` is a JSON object of known generation options."""
    if not isinstance(params, dict):
        raise EndpointConfigError(
            f"params must be a JSON object of request options, e.g. {{\"temperature\": 0}}, not a {type(params).__name__}."
        )
    unknown = sorted(str(k) for k in params if k not in GENERATION_PARAMS)
    if unknown:
        raise EndpointConfigError(
            f"params: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(GENERATION_PARAMS))}."
        )


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
        if self.backend == "openai":
            if not self.base_url:
                raise EndpointConfigError(f"Endpoint {self.name!r} needs a base URL.")
            check_base_url(self.base_url)
        if not isinstance(self.params, dict):
            # Only the shape here: the list of options is checked when an endpoint is saved, so a
            # stored row with an option added later keeps working.
            raise EndpointConfigError(f"Endpoint {self.name!r}: params must be a JSON object, not a "
                                      f"{type(self.params).__name__}.")
        if self.concurrency < 1:
            raise EndpointConfigError("concurrency must be at least 1.")
        check_max_retries(self.max_retries)
        if self.timeout_s <= 0:
            raise EndpointConfigError("timeout_s must be positive.")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Cost in USD of one call with these token counts."""
        return (prompt_tokens * self.price_input_per_m + completion_tokens * self.price_output_per_m) / 1_000_000

    def api_key(self) -> str | None:
        """The key, read from the environment at call time (None when no variable is named)."""
        return read_api_key(self.api_key_env, f"Endpoint {self.name!r}")

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready copy for a judge run's record; it never contains the key itself."""
        return asdict(self)

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> EndpointConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})
