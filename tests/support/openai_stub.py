"""A small OpenAI-compatible chat-completions server on loopback, for tests and benchmarks.

It is the only stand-in for a remote model: answers are derived from the prompt alone, so a test
can compute what the "model" will say. Switches simulate what real endpoints do: a fixed delay,
bursts of 429/500, malformed answers, missing usage, and being down; ``reply_with`` makes it a
hostile or wrong server (a redirect, an internal page, a huge reply), and ``hits`` records every
request it got (method, path, headers) whatever it answered.

Judge prompts (a ``<criterion>`` element in the last user message) get an Expectations /
Reality / Score answer ending in a JSON verdict whose score is ``stub_score(criterion)``;
anything else gets ``"OK: "`` plus the start of the last message.

    python -m tests.support.openai_stub --delay 0.5   # prints the base URL, serves until killed
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CRITERION = re.compile(r"<criterion>\s*(.*?)\s*</criterion>", re.S)


def stub_score(criterion: str) -> int:
    """The stub judge's 0/1 verdict for a criterion: a stable hash bit of its text."""
    return hashlib.sha256(criterion.strip().encode()).digest()[0] % 2


def stub_tokens(text: str) -> int:
    """Token count the stub reports for a text (so tests can predict usage and cost)."""
    return len(text) // 4 + 1


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(stub_tokens(str(m.get("content", ""))) for m in messages)


def tool_call(name: str, call_id: str = "", **arguments: Any) -> dict[str, Any]:
    """One OpenAI-shaped tool call, for a responder's scripted assistant messages."""
    call_id = call_id or "call_" + hashlib.sha256(f"{name}{sorted(arguments.items())}".encode()).hexdigest()[:10]
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def answer_for(messages: list[dict[str, Any]]) -> str:
    last = str(messages[-1].get("content", "")) if messages else ""
    text = "\n".join(str(m.get("content", "")) for m in messages)
    match = CRITERION.search(text)
    if match is None:
        return "OK: " + last[:40]
    criterion = match.group(1)
    score = stub_score(criterion)
    verdict = {"valid_score": True, "score": score, "explanation": f"stub verdict for: {criterion[:60]}"}
    return (
        f"Expectations: the submission should satisfy: {criterion[:80]}\n"
        f"Reality: the stub looked at the files.\n"
        f"Score: {score}\n```json\n{json.dumps(verdict)}\n```"
    )


class StubState:
    def __init__(self) -> None:
        self.delay_s = 0.0
        self.fail_statuses: deque[int] = deque()  # popped one per request: 429/500 bursts
        self.retry_after: float | None = None
        self.malformed = False  # every answer has no score in it
        self.malformed_when: str | None = None  # malformed only when the prompt contains this
        self.no_usage = False
        # A script for callers that need more than the default answers (a rubric drafter, a tool-
        # calling teacher): called with the request body; a str is the answer's content, a dict
        # the whole assistant message (content, tool_calls), None falls through to the defaults.
        self.responder: Callable[[dict[str, Any]], str | dict[str, Any] | None] | None = None
        self.requests: list[dict[str, Any]] = []
        self.reloads: list[dict[str, Any]] = []  # weight reloads asked of an inference server (RL)
        self.hits: list[dict[str, Any]] = []  # every request: {"method", "path", "headers"}
        # (status, headers, body) sent for every request instead of the answers above, the body
        # one byte every drip_s seconds when that is set (a server that stalls a reader).
        self.fixed_reply: tuple[int, dict[str, str], bytes] | None = None
        self.drip_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests served at once: checks client concurrency limits
        self.lock = threading.Lock()

    def next_failure(self) -> int | None:
        with self.lock:
            return self.fail_statuses.popleft() if self.fail_statuses else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse pooled connections
    # Headers and body go out in two writes; with Nagle on, the body waits ~40 ms for the
    # client's delayed ACK on every call, which a real server would not add.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base class name)
        pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _fixed_reply(self) -> bool:
        """Record the request; True when ``reply_with`` answered it."""
        state = self.server.state
        with state.lock:
            state.hits.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
            fixed = state.fixed_reply
        if fixed is None:
            return False
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, headers, body = fixed
        self.send_response(status)
        headers = {"Content-Length": str(len(body)), **headers}
        if not headers["Content-Length"]:  # Content_Length="": no length, the body ends when the connection does
            del headers["Content-Length"]
            headers["Connection"] = "close"
            self.close_connection = True
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        try:
            if state.drip_s:
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(state.drip_s)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client stopped reading: that is what was tested
        return True

    def do_GET(self) -> None:
        if self._fixed_reply():
            return
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": "stub-model", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        if self._fixed_reply():
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        state = self.server.state
        if self.path.rstrip("/").endswith(("/update_weights_from_disk", "/load_lora_adapter")):
            # SGLang's and vLLM's weight-reload routes, as an RL trainer calls them after an update
            with state.lock:
                state.reloads.append({"path": self.path, **json.loads(raw or b"{}")})
            self._send(200, {"success": True, "message": "weights loaded"})
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, {"error": {"message": "not found"}})
            return
        try:
            body = json.loads(raw)
            messages = body["messages"]
        except (ValueError, KeyError, TypeError):
            self._send(400, {"error": {"message": "bad request"}})
            return
        with state.lock:
            state.requests.append(body)
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            self._answer(state, body, messages)
        finally:
            with state.lock:
                state.in_flight -= 1

    def _answer(self, state: StubState, body: dict[str, Any], messages: list[dict[str, Any]]) -> None:
        if state.delay_s:
            time.sleep(state.delay_s)
        failure = state.next_failure()
        if failure is not None:
            headers = {"Retry-After": str(state.retry_after)} if state.retry_after is not None else None
            self._send(failure, {"error": {"message": f"stub failure {failure}"}}, headers)
            return
        prompt_text = "\n".join(str(m.get("content", "")) for m in messages)
        scripted = state.responder(body) if state.responder is not None else None
        message: dict[str, Any] = {"role": "assistant"}
        if isinstance(scripted, dict):
            message.update(scripted)
            content = str(message.get("content") or "")
        elif isinstance(scripted, str):
            content = scripted
        elif state.malformed or (state.malformed_when and state.malformed_when in prompt_text):
            content = "Hmm, hard to say. The code looks plausible overall."
        else:
            content = answer_for(messages)
        message.setdefault("content", content)
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        response: dict[str, Any] = {
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "model": body.get("model", "stub-model"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        }
        if not state.no_usage:
            pt, ct = prompt_tokens(messages), stub_tokens(content)
            response["usage"] = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
        self._send(200, response)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # a judge opens up to its concurrency limit of connections at once
    state: StubState

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-reply (a size or time limit doing its job) is no fault of the stub.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class OpenAIStub:
    """Start with ``with OpenAIStub() as stub:``; ``stub.base_url`` ends in ``/v1``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = StubState()
        self._server = _Server((host, port), _Handler)
        self._server.state = self.state
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._running = False

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> OpenAIStub:
        self._thread.start()
        self._running = True
        return self

    def down(self) -> None:
        """Stop serving and close the socket: connections are refused from now on."""
        if self._running:
            self._server.shutdown()
            self._running = False
        self._server.server_close()

    def __enter__(self) -> OpenAIStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # Switches -----------------------------------------------------------------------------
    def fail_next(self, *statuses: int, retry_after: float | None = None) -> None:
        self.state.fail_statuses.extend(statuses)
        self.state.retry_after = retry_after

    def reply_with(self, status: int, body: bytes = b"", *, drip_s: float = 0.0, **headers: str) -> None:
        """Answer every request with this status, body and headers (``Location="..."`` for a
        redirect, ``Content_Length=""`` for none), the body a byte every ``drip_s`` seconds if set."""
        self.state.fixed_reply = (status, {k.replace("_", "-"): v for k, v in headers.items()}, body)
        self.state.drip_s = drip_s

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.state.requests

    @property
    def hits(self) -> list[dict[str, Any]]:
        return self.state.hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    stub = OpenAIStub(port=args.port)
    stub.state.delay_s = args.delay
    print(stub.base_url, flush=True)
    stub._server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
