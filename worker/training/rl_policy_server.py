"""A small policy served over the OpenAI API on loopback: what the rollout pool talks to when no
vLLM or SGLang serves the policy (tests, the benchmark, a one-box install with a small model).

It behaves as those engines do for RL, on a model folder loaded with transformers:
- ``POST /v1/chat/completions`` answers concurrent requests by **batching** them: calls that
  arrive within ``batch_window_s`` of each other (up to ``max_batch``) are generated together in
  one left-padded ``generate`` (as an engine batches its running requests), and every answer
  carries its sampled **token ids** (``choices[0].token_ids``, vLLM's ``return_token_ids``) and
  **log-probs** (``logprobs.content[].token`` = ``"token_id:N"``, vLLM's
  ``return_tokens_as_token_ids``), the policy's at temperature 1 (vLLM's default raw log-probs);
- ``POST /update_weights_from_disk {"model_path"}`` (SGLang's route) swaps the weights in: calls in
  flight finish on the old ones, new calls wait for the swap, the served version goes up by one;
- vLLM's RLHF development routes: ``/sleep?level=2``, ``/wake_up?tags=weights|kv_cache``,
  ``/collective_rpc {"method": "reload_weights"}`` (the model folder read again), ``/reset_prefix_cache``;
- ``latency_s``: a fixed latency per call (a remote engine's, for the benchmark): each answer leaves
  that long after its call came, the forward pass included;
- ``script(messages) -> str | None``: a scripted answer instead of a sample (short, predictable
  agent replies for tests), still with the ids the tokenizer gives it and the model's log-probs.
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from apps.trajectories.tokens import turn_text
from worker.training.rl import WeightGate

Script = Callable[[list[dict[str, Any]]], str | None]


@dataclass
class _Call:
    messages: list[dict[str, Any]]
    prompt_ids: list[int]
    max_new: int
    temperature: float
    done: threading.Event = field(default_factory=threading.Event)
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    version: int = 0
    error: str = ""


def _plain(messages: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Messages as a template without tool syntax takes them: tool calls written into the text."""
    out = []
    for m in messages:
        calls = m.get("tool_calls") or ()
        calls = [{"name": (c.get("function") or {}).get("name", ""), "arguments": (c.get("function") or {}).get(
            "arguments", "")} for c in calls if isinstance(c, dict)]
        out.append({"role": str(m.get("role", "user")), "content": turn_text(str(m.get("content") or ""), "", calls)})
    return out


class PolicyServer:
    """Start with ``with PolicyServer(folder) as server:``; ``server.base_url`` ends in ``/v1``."""

    def __init__(self, model_dir: str | Path, *, latency_s: float = 0.0, max_batch: int = 64,
                 batch_window_s: float = 0.005, script: Script | None = None, max_new_tokens: int = 512,
                 host: str = "127.0.0.1", port: int = 0, version: int = 0) -> None:
        self.model_dir = Path(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.latency_s = latency_s
        self.max_batch = max_batch
        self.batch_window_s = batch_window_s
        self.script = script
        self.max_new_tokens = max_new_tokens
        self.version = version
        self.gate = WeightGate()
        self.batch_sizes: list[int] = []  # how many calls each forward pass served (batching at work)
        self.reloads: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Call | None] = queue.Queue()
        self._http = ThreadingHTTPServer((host, port), _handler(self))
        self._http.daemon_threads = True
        self._http.request_queue_size = 1024
        self._threads: list[threading.Thread] = []
        self._sleep: Any = None  # the held weight swap while asleep

    @property
    def base_url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> PolicyServer:
        for target in (self._batcher, lambda: self._http.serve_forever(poll_interval=0.05)):
            thread = threading.Thread(target=target, daemon=True, name="policy-server")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._queue.put(None)

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- generation -----------------------------------------------------------------------

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """One chat completion (what the HTTP route answers), waiting for its batch."""
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list")
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        arrived = time.monotonic()
        try:
            prompt = self.tokenizer.apply_chat_template(_plain(messages), add_generation_prompt=True, tokenize=False)
            call = _Call(messages, self.tokenizer.encode(prompt, add_special_tokens=False),
                         int(body.get("max_tokens") or self.max_new_tokens), float(body.get("temperature", 1.0) or 0.0))
            self._queue.put(call)
            call.done.wait()
            # the answer leaves latency_s after the call came (the engine's work counted in it, as a
            # remote engine's latency includes its own), not latency_s plus this CPU's forward pass
            time.sleep(max(0.0, arrived + self.latency_s - time.monotonic()))
        finally:
            with self._lock:
                self.in_flight -= 1
        if call.error:
            raise RuntimeError(call.error)
        eos = self.tokenizer.eos_token_id
        text = self.tokenizer.decode(call.ids, skip_special_tokens=True)
        return {
            "id": f"chatcmpl-policy-{id(call):x}", "object": "chat.completion", "model": body.get("model", "policy"),
            "system_fingerprint": f"policy-v{call.version}",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop" if call.ids and call.ids[-1] == eos else "length",
                         "token_ids": call.ids,
                         "logprobs": {"content": [{"token": f"token_id:{t}", "logprob": lp, "top_logprobs": []}
                                                  for t, lp in zip(call.ids, call.logprobs, strict=True)]}}],
            "usage": {"prompt_tokens": len(call.prompt_ids), "completion_tokens": len(call.ids),
                      "total_tokens": len(call.prompt_ids) + len(call.ids)},
        }

    def _batcher(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            calls = [first]
            deadline = time.monotonic() + self.batch_window_s
            while len(calls) < self.max_batch:
                try:
                    more = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                calls.append(more)
            try:
                with self.gate.generating():
                    self._run(calls)
            except Exception as exc:  # noqa: BLE001 - every call of the batch gets the error
                for call in calls:
                    call.error = f"{type(exc).__name__}: {exc}"
            for call in calls:
                call.done.set()

    def _run(self, calls: list[_Call]) -> None:
        self.batch_sizes.append(len(calls))
        sampled = []
        for call in calls:
            call.version = self.version
            text = self.script(call.messages) if self.script is not None else None
            if text is None:
                sampled.append(call)
            else:
                call.ids = self.tokenizer.encode(text, add_special_tokens=False)[: call.max_new - 1]
                call.ids.append(self.tokenizer.eos_token_id)
        scripted = [c for c in calls if c not in sampled]
        if sampled:
            self._sample(sampled)
        if scripted:
            self._score(scripted)

    def _sample(self, calls: list[_Call]) -> None:
        """One left-padded ``generate`` for the batch; each row cut at its end-of-turn and max_tokens."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        eos = self.tokenizer.eos_token_id
        width = max(len(c.prompt_ids) for c in calls)
        ids = torch.tensor([[pad] * (width - len(c.prompt_ids)) + c.prompt_ids for c in calls])
        mask = torch.tensor([[0] * (width - len(c.prompt_ids)) + [1] * len(c.prompt_ids) for c in calls])
        temperature = max(c.temperature for c in calls)
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max(c.max_new for c in calls),
                                      do_sample=temperature > 0, temperature=temperature or None, pad_token_id=pad,
                                      output_logits=True, return_dict_in_generate=True)
        new = out.sequences[:, width:]
        for row, call in enumerate(calls):
            for step in range(min(call.max_new, new.shape[1])):
                token = int(new[row, step])
                call.ids.append(token)
                call.logprobs.append(float(torch.log_softmax(out.logits[step][row].float(), dim=-1)[token]))
                if token == eos:
                    break

    def _score(self, calls: list[_Call]) -> None:
        """The model's log-prob of each scripted token: one right-padded forward for the batch."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        rows = [c.prompt_ids + c.ids for c in calls]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
        for row, call in enumerate(calls):
            start = len(call.prompt_ids)
            picked = torch.log_softmax(logits[row, start - 1: start - 1 + len(call.ids)], dim=-1)
            call.logprobs = [float(v) for v in picked.gather(1, torch.tensor(call.ids).unsqueeze(1)).squeeze(1)]

    # -- weights --------------------------------------------------------------------------

    def sleep(self) -> None:
        """vLLM's /sleep: no generation until woken (calls wait; the ones in flight finish first)."""
        with self._lock:
            if self._sleep is not None:
                return
            self._sleep = self.gate.swapping()
        self._sleep.__enter__()

    def wake_up(self, tags: Sequence[str]) -> None:
        """vLLM's /wake_up: the KV cache back (no tags, or "kv_cache") lets generation go on."""
        with self._lock:
            asleep, wake = self._sleep, not tags or "kv_cache" in tags
            if wake:
                self._sleep = None
        if asleep is not None and wake:
            asleep.__exit__(None, None, None)

    def reload_weights(self) -> int:
        """vLLM's collective_rpc reload_weights: the model's own folder read again (asleep only)."""
        if self._sleep is None:
            raise RuntimeError("reload_weights needs the engine asleep (POST /sleep first)")
        fresh = AutoModelForCausalLM.from_pretrained(self.model_dir, local_files_only=True)
        with torch.no_grad():
            for mine, theirs in zip(self.model.parameters(), fresh.parameters(), strict=True):
                mine.copy_(theirs)
        self.version += 1
        return self.version

    def load_weights(self, folder: str | Path) -> int:
        """Swap in the weights saved in ``folder`` (calls in flight finish first); the new version."""
        fresh = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
        with self.gate.swapping(), torch.no_grad():
            for mine, theirs in zip(self.model.parameters(), fresh.parameters(), strict=True):
                mine.copy_(theirs)
            self.version += 1
            return self.version


def _handler(server: PolicyServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base class name)
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": "policy", "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the body is not a JSON object")
            except ValueError as exc:
                self._send(400, {"error": {"message": f"bad request: {exc}"}})
                return
            path, _, query = self.path.partition("?")
            path = path.rstrip("/")
            params = dict(part.partition("=")[::2] for part in query.split("&") if part)
            if path in ("/sleep", "/wake_up", "/collective_rpc", "/reset_prefix_cache"):
                server.reloads.append({"path": path, **params, **body})
            try:
                if path == "/sleep":
                    server.sleep()
                    self._send(200, {})
                elif path == "/wake_up":
                    server.wake_up([t for t in params.get("tags", "").split(",") if t])
                    self._send(200, {})
                elif path == "/collective_rpc":
                    if body.get("method") != "reload_weights":
                        raise ValueError(f"unsupported collective_rpc method {body.get('method')!r}")
                    self._send(200, {"results": [server.reload_weights()]})
                elif path == "/reset_prefix_cache":
                    self._send(200, {})
                elif path.endswith("/chat/completions"):
                    self._send(200, server.complete(body))
                elif path.endswith("/update_weights_from_disk"):
                    version = server.load_weights(str(body["model_path"]))
                    server.reloads.append({"path": path, **body})
                    self._send(200, {"success": True, "message": f"loaded policy v{version}"})
                else:
                    self._send(404, {"error": {"message": "not found"}})
            except (KeyError, ValueError, TypeError, OSError, RuntimeError) as exc:
                self._send(400, {"error": {"message": f"{type(exc).__name__}: {exc}"}})

    return Handler


def scripted_agent(messages: list[dict[str, Any]]) -> str:
    """A scripted agent for smoke runs and the benchmark: three cheap bash calls, then submit."""
    done = sum(1 for m in messages if m.get("role") == "tool")
    if done < 3:
        call = {"name": "bash", "arguments": {"cmd": f"echo step {done} >> log.txt"}}
    else:
        call = {"name": "submit", "arguments": {"end_message": "log.txt"}}
    return f"<tool_call>{json.dumps(call)}</tool_call>"


def main() -> None:
    """``python -m worker.training.rl_policy_server MODEL_DIR``: serve until killed (its own process,
    as an engine is); prints the base URL first."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every call")
    parser.add_argument("--scripted-agent", action="store_true", help="answer with scripted_agent's tool calls")
    args = parser.parse_args()
    torch.set_num_threads(1)
    server = PolicyServer(args.model_dir, latency_s=args.latency, port=args.port,
                          script=scripted_agent if args.scripted_agent else None)
    server.start()
    print(server.base_url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
