"""One client for every model call: judge, rubric drafter, teacher and policy agents.

``ChatClient`` speaks OpenAI-compatible ``/v1/chat/completions`` over HTTP with retries
(exponential backoff with jitter on 429, 5xx, timeouts and refused connections: urllib3's
``Retry`` on the session's adapter, see ``EndpointRetry``), a per-endpoint concurrency limit
shared by every client of that endpoint in the process, and a ``CallRecord`` (attempts, tokens,
cost, latency) for each call. ``make_client`` also returns the local transformers backend, which
has the same ``chat`` method.

An endpoint is untrusted: redirects are never followed (a 3xx is an error naming the problem),
a reply is read in pieces up to a size limit and a deadline, and an error repeats nothing of the
reply but the message of an OpenAI-style error object.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError
from urllib3.util.retry import Retry

from apps.judging.llm.config import DEFAULT_MAX_REPLY_BYTES, EndpointConfig
from apps.judging.llm.local import LocalChatClient
from apps.judging.llm.records import (
    CallRecord,
    ChatResult,
    LLMBadResponse,
    LLMError,
    LLMRequestRejected,
    LLMUnavailable,
)

Message = dict[str, Any]
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
ERROR_REPLY_BYTES = 64 * 1024  # an error reply is read only for its message
REDIRECTED = "the endpoint redirects to another address; give the final URL as its base URL"
# Where OpenAI-compatible servers put a thinking model's reasoning, in order of preference.
REASONING_KEYS = ("reasoning_content", "reasoning")


class Chat(Protocol):
    config: EndpointConfig

    def chat(self, messages: Sequence[Message], **params: Any) -> ChatResult: ...


_limits: dict[tuple[str, str, int], threading.BoundedSemaphore] = {}
_limits_lock = threading.Lock()


def endpoint_limit(config: EndpointConfig) -> threading.BoundedSemaphore:
    """The process-wide semaphore of one endpoint: two judges on one server share its limit."""
    key = (config.name, config.base_url or config.model, config.concurrency)
    with _limits_lock:
        sem = _limits.get(key)
        if sem is None:
            sem = _limits[key] = threading.BoundedSemaphore(config.concurrency)
        return sem


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: Callable[[], float] = random.random) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, with equal jitter.

    Half the delay is fixed and half random, so delays still grow with each attempt (unlike full
    jitter) while many clients hit by the same 429 burst do not retry in lock-step.
    """
    ceiling = min(max_s, base_s * (2 ** (attempt - 1)))
    return ceiling / 2 + rng() * ceiling / 2


def estimate_tokens(text: str) -> int:
    # Used only when a server reports no usage; flagged on the record as an estimate.
    return max(1, len(text) // 4) if text else 0


def max_reply_bytes() -> int:
    """KLONG_ENDPOINT_MAX_REPLY_BYTES from Django settings when they are configured."""
    try:

        if settings.configured:
            return int(getattr(settings, "KLONG_ENDPOINT_MAX_REPLY_BYTES", DEFAULT_MAX_REPLY_BYTES))
    except ImportError:
        pass
    return DEFAULT_MAX_REPLY_BYTES


class ReplyTooLarge(ValueError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the reply is larger than {limit} bytes (KLONG_ENDPOINT_MAX_REPLY_BYTES)")


def read_reply(response: requests.Response | urllib3.BaseHTTPResponse, limit: int, deadline: float, *,
               truncate: bool = False) -> bytes:
    """The body of a reply sent with ``stream=True`` (or of the urllib3 response under it),
    decompressed, read in pieces.

    At most ``limit`` bytes (more raises ``ReplyTooLarge``, or is cut off with ``truncate``), all
    by ``deadline`` (``time.monotonic()``; else ``TimeoutError``): a hostile server can neither
    fill the memory nor hold the caller by sending a byte now and then. A broken connection
    raises ``ConnectionError``, a damaged compressed body ``ValueError``.
    """
    declared = response.headers.get("Content-Length", "")
    if not truncate and declared.isdigit() and int(declared) > limit:
        raise ReplyTooLarge(limit)
    raw = response.raw if isinstance(response, requests.Response) else response
    body = bytearray()
    try:
        while len(body) <= limit:
            if time.monotonic() > deadline:
                raise TimeoutError
            # read1: one receive's worth, so the deadline is checked between receives.
            piece = raw.read1(64 * 1024, decode_content=True)
            if not piece:
                break
            body += piece
    except TimeoutError:
        raise
    except urllib3.exceptions.ReadTimeoutError:
        raise TimeoutError from None
    except urllib3.exceptions.DecodeError:
        raise ValueError("the reply's compressed body is damaged") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise ConnectionError(f"the connection broke while reading the reply: {type(exc).__name__}") from None
    if len(body) > limit:
        if not truncate:
            raise ReplyTooLarge(limit)
        del body[limit:]
    return bytes(body)


def error_detail(body: bytes) -> str:
    """The message of an OpenAI-style error reply (``{"error": {"message": ...}}``, or vLLM's and
    SGLang's ``{"object": "error", "message": ...}``); '' for any other body, which is never repeated."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    if not isinstance(data, dict):
        return ""
    error = data.get("error")
    if isinstance(error, dict):
        message = error.get("message")
    elif data.get("object") == "error":
        message = data.get("message")
    else:
        return ""
    return _snippet(message) if isinstance(message, str) else ""


def _count(value: Any) -> int | None:
    # A reported token count is used only when it is a plausible one (hostile servers lie).
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**9 else None


def attempt_error(error: Exception, config: EndpointConfig) -> str:
    """One failed attempt without a reply, in words (a record's error line)."""
    # NewConnectionError is a ConnectTimeoutError too in urllib3 2 (refused, unreachable).
    if isinstance(error, urllib3.exceptions.TimeoutError) and not isinstance(error, NewConnectionError):
        return f"timed out after {config.timeout_s:g} s"
    return f"cannot connect to {config.base_url}: {type(error).__name__}"


def status_error(response: requests.Response | urllib3.BaseHTTPResponse, deadline: float) -> str:
    """A reply with an error status, in words: the status and an OpenAI-style message, nothing else.
    The message is read from at most ERROR_REPLY_BYTES by ``deadline``; a reply that gives no
    message by then is just its status."""
    status = response.status_code if isinstance(response, requests.Response) else response.status
    try:
        detail = error_detail(read_reply(response, ERROR_REPLY_BYTES, deadline, truncate=True))
    except (TimeoutError, ConnectionError, ValueError):
        detail = ""
    return f"HTTP {status}: {detail}" if detail else f"HTTP {status}"


class EndpointRetry(Retry):
    """urllib3's ``Retry`` as an endpoint's adapter uses it: urllib3 decides what is retried
    (connection errors, timeouts before the reply, the statuses in RETRY_STATUSES, for POST
    too) and how often (``total``); with retries left over, the last reply comes back
    (``raise_on_status=False``) and the client reports it. What this subclass changes:

    - the wait: equal jitter from the first retry on (``backoff_delay``; urllib3's own waits 0
      before the first retry), at least a Retry-After up to ``backoff_max`` (urllib3 waits up to
      6 hours), an unreadable Retry-After ignored (urllib3 raises), through ``pause``;
    - each failed attempt is recorded in ``failures``, and a failed reply is read only for its
      error message (ERROR_REPLY_BYTES, within the timeout), then closed: urllib3 would read a
      failed reply whole before retrying, however large or slow.

    urllib3 makes a new ``Retry`` per attempt (``new``); the one of the attempt that answered
    is ``response.raw.retries``, with every earlier failure.
    """

    # urllib3 also retries a 413 that has a Retry-After: here, only the statuses in RETRY_STATUSES.
    RETRY_AFTER_STATUS_CODES = RETRY_STATUSES

    def __init__(self, *args: Any, config: EndpointConfig, pause: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] = random.random, failures: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config = config
        self.pause = pause
        self.rng = rng
        self.failures = failures
        self.resumed_at: float | None = None  # when the attempt after a wait started

    @classmethod
    def for_endpoint(cls, config: EndpointConfig, pause: Callable[[float], None] = time.sleep,
                     rng: Callable[[], float] = random.random) -> EndpointRetry:
        return cls(total=config.max_retries, allowed_methods=None, status_forcelist=RETRY_STATUSES,
                   backoff_factor=config.backoff_base_s, backoff_max=config.backoff_max_s, raise_on_status=False,
                   config=config, pause=pause, rng=rng)

    def new(self, **kw: Any) -> EndpointRetry:
        return super().new(**{"config": self.config, "pause": self.pause, "rng": self.rng,
                              "failures": self.failures, **kw})

    def get_backoff_time(self) -> float:
        failed = len(self.history)
        return backoff_delay(failed, self.backoff_factor, self.backoff_max, self.rng) if failed else 0.0

    def sleep(self, response: urllib3.BaseHTTPResponse | None = None) -> None:
        delay = self.get_backoff_time()
        retry_after = _retry_after(response) if response is not None else None
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        self.pause(delay)
        self.resumed_at = time.monotonic()

    def increment(self, method: str | None = None, url: str | None = None,
                  response: urllib3.BaseHTTPResponse | None = None, error: Exception | None = None,
                  _pool: Any = None, _stacktrace: Any = None) -> EndpointRetry:
        try:
            retry = super().increment(method, url, response, error, _pool, _stacktrace)
        except MaxRetryError as exc:
            # Out of retries. A last reply goes back to the client unread; a last error is raised
            # (requests wraps it) carrying every failure, for the client's record.
            if response is None and error is not None:
                exc.failures = (*self.failures, attempt_error(error, self.config))  # type: ignore[attr-defined]
            raise
        retry.failures = (*self.failures,
                          attempt_error(error, self.config) if response is None else self._read_failed(response))
        return retry

    def _read_failed(self, response: urllib3.BaseHTTPResponse) -> str:
        reason = status_error(response, time.monotonic() + self.config.timeout_s)
        # Closed, so urllib3's drain before the retry has nothing left to read.
        response.close()
        return reason


def failures_of(exc: requests.RequestException) -> tuple[str, ...]:
    """The failed attempts behind a request that urllib3 gave up retrying (none for other errors)."""
    cause = exc.args[0] if exc.args else None
    return getattr(cause, "failures", ())


class ChatClient:
    """OpenAI-compatible chat completions over HTTP."""

    def __init__(
        self,
        config: EndpointConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        reply_limit: int | None = None,
    ) -> None:
        self.config = config
        self._sleep = sleep
        self._reply_limit = reply_limit or max_reply_bytes()
        self._limit = endpoint_limit(config)
        session = requests.Session()
        # One pooled connection per concurrent call: no reconnects under load. urllib3 retries.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=config.concurrency,
                              max_retries=EndpointRetry.for_endpoint(config, self._pause, rng))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        # requests re-reads proxy and CA settings from the environment on every call (about 1.5 ms
        # each); read them once here instead, so thousands of judge calls do not pay for it.
        self._proxies = requests.utils.get_environ_proxies(self.url)
        self._verify: bool | str = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        session.trust_env = False
        self._session = session

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = self.config.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _pause(self, seconds: float) -> None:
        # Between attempts (called by EndpointRetry, inside ``chat``'s hold of the endpoint's slot):
        # a call waiting out a backoff lets others use its slot.
        self._limit.release()
        try:
            self._sleep(seconds)
        finally:
            self._limit.acquire()

    def chat(self, messages: Sequence[Message], **params: Any) -> ChatResult:
        """One chat completion; retries transient failures, raises ``LLMError`` subclasses."""
        cfg = self.config
        body = {**cfg.params, **params, "model": cfg.model, "messages": list(messages)}
        headers = self._headers()
        record = CallRecord(endpoint=cfg.name, model=cfg.model)
        started = time.monotonic()
        try:
            with self._limit:
                data = self._post(body, headers, record)
        except LLMError as exc:
            if not isinstance(exc, LLMUnavailable):  # its line is in the record already
                record.errors.append(str(exc))
            record.total_s = time.monotonic() - started
            exc.record = record
            raise
        record.total_s = time.monotonic() - started
        return self._result(data, messages, record)

    def _post(self, body: dict[str, Any], headers: dict[str, str], record: CallRecord) -> dict[str, Any]:
        """Send the call (urllib3 retries it) and read the answer; fills in the record's attempts,
        errors and latency. A reply that stalls or breaks after its headers is not tried again."""
        timeout = self.config.timeout_s
        attempt_started = time.monotonic()
        try:
            response = self._session.post(
                self.url, json=body, headers=headers, timeout=(min(10.0, timeout), timeout),
                proxies=self._proxies, verify=self._verify, stream=True, allow_redirects=False,
            )
        except requests.RequestException as exc:
            failures = failures_of(exc)
            if not failures:
                record.attempts = 1
                raise LLMRequestRejected(f"the request could not be sent: {type(exc).__name__}") from None
            record.attempts, record.errors = len(failures), list(failures)
            raise self._gave_up(record, None) from None
        retries = response.raw.retries
        if isinstance(retries, EndpointRetry):
            record.errors = list(retries.failures)
            attempt_started = retries.resumed_at or attempt_started
        record.attempts = len(record.errors) + 1
        deadline = attempt_started + timeout
        with response:
            status = response.status_code
            if 300 <= status < 400:
                raise LLMRequestRejected(f"HTTP {status}: {REDIRECTED}", status=status)
            try:
                if status >= 400:
                    reason = status_error(response, deadline)
                    if status in RETRY_STATUSES:
                        record.errors.append(reason)
                        raise self._gave_up(record, status)
                    raise LLMRequestRejected(reason, status=status)
                raw = read_reply(response, self._reply_limit, deadline)
            except TimeoutError:
                record.errors.append(f"timed out after {timeout:g} s")
                raise self._gave_up(record, status) from None
            except ConnectionError as exc:
                record.errors.append(str(exc))
                raise self._gave_up(record, status) from None
            except ValueError as exc:
                raise LLMBadResponse(f"HTTP {status}: {exc}", status=status) from None
        record.latency_s = time.monotonic() - attempt_started
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise LLMBadResponse(f"HTTP {status}: the reply is not JSON: not an OpenAI-compatible API",
                                 status=status) from None
        if not isinstance(data, dict):
            raise LLMBadResponse(f"HTTP {status}: the reply is not a JSON object: not an OpenAI-compatible API",
                                 status=status)
        return data

    def _gave_up(self, record: CallRecord, status: int | None) -> LLMUnavailable:
        return LLMUnavailable(f"{self.config.name}: gave up after {record.attempts} attempt(s); last error: "
                              f"{record.errors[-1]}", record, status=status)

    def _result(self, data: dict[str, Any], messages: Sequence[Message], record: CallRecord) -> ChatResult:
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
            if not isinstance(text, str):
                raise TypeError
        except (KeyError, IndexError, TypeError, AttributeError):
            raise LLMBadResponse("the reply has no choices[0].message with text content: not an OpenAI-compatible "
                                 "chat completion", record, status=200) from None
        reasoning = reasoning_of(choice["message"])
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        prompt_tokens, completion_tokens = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
        if prompt_tokens is not None and completion_tokens is not None:
            record.prompt_tokens = prompt_tokens
            record.completion_tokens = completion_tokens
        else:
            record.usage_estimated = True
            record.prompt_tokens = sum(estimate_tokens(str(m.get("content", ""))) for m in messages)
            record.completion_tokens = estimate_tokens(text) + estimate_tokens(reasoning)
        record.cost_usd = self.config.cost(record.prompt_tokens, record.completion_tokens)
        record.ok = True
        calls = choice["message"].get("tool_calls")
        finish = choice.get("finish_reason")
        token_ids, logprobs = sampled_tokens(choice)
        return ChatResult(text=text, record=record, finish_reason=finish if isinstance(finish, str) else None,
                          tool_calls=[c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else [],
                          reasoning=reasoning, token_ids=token_ids, logprobs=logprobs)


# What an RL policy asks of vLLM for token-in/token-out: per-token log-probs (OpenAI's ``logprobs``)
# with each token named by its id (vLLM's ``return_tokens_as_token_ids``: "token_id:1234"), and
# the ids themselves (vLLM's ``return_token_ids``). Servers that do not know an extra ignore it.
TOKEN_PARAMS: dict[str, Any] = {"logprobs": True, "return_tokens_as_token_ids": True, "return_token_ids": True}


def sampled_tokens(choice: dict[str, Any]) -> tuple[list[int], list[float]]:
    """The sampled ids and their log-probs from a chat completion choice, ([], []) when the server
    gave no ids: ``choice.token_ids`` (vLLM ``return_token_ids``) or ``logprobs.content[].token``
    as "token_id:N" (vLLM ``return_tokens_as_token_ids``); log-probs from ``logprobs.content``.
    Anything implausible (a non-integer id, a count that does not match) gives nothing: a wrong
    id would be trained on."""
    content = choice.get("logprobs")
    entries = content.get("content") if isinstance(content, dict) else None
    entries = entries if isinstance(entries, list) else []
    logprobs: list[float] = []
    named: list[int] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("logprob"), (int, float)):
            logprobs, named = [], []
            break
        logprobs.append(float(entry["logprob"]))
        token = entry.get("token")
        if isinstance(token, str) and token.startswith("token_id:") and token[9:].isdigit():
            named.append(int(token[9:]))
    ids = choice.get("token_ids")
    if isinstance(ids, list) and ids and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        token_ids = list(ids)
    elif entries and len(named) == len(entries):
        token_ids = named
    else:
        return [], []
    return token_ids, (logprobs if len(logprobs) == len(token_ids) else [])


def reasoning_of(message: dict[str, Any]) -> str:
    """The reply's reasoning text, '' when it has none (or something other than text there)."""
    for key in REASONING_KEYS:
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _retry_after(response: urllib3.BaseHTTPResponse) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _snippet(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def make_client(config: EndpointConfig, **kwargs: Any) -> Chat:
    """The client for an endpoint's backend (the local one imports torch only when asked for)."""
    if config.backend == "transformers":
        return LocalChatClient(config)
    return ChatClient(config, **kwargs)
