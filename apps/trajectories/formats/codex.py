"""Codex CLI session logs: the rollout JSONL Codex writes to ~/.codex/sessions/YYYY/MM/DD/rollout-*.jsonl.

One line per item, ``{"timestamp", "type", "payload"}``: ``session_meta`` (id, cwd, cli_version,
instructions...), ``turn_context`` (the model and its settings for the next user turn),
``response_item`` (the Responses API items the model saw or produced), ``event_msg`` (what the
terminal showed) and ``compacted`` (the history replaced by a summary). Rollouts written before
the wrapper existed (codex-rs before 0.3x) start with a bare session line and hold bare response
items; both are read.

Turns come from the response items only. The event messages repeat them for the terminal (a
user_message for each user message, an agent_message for each assistant message, exec events for
each call), so reading both would show, count and train everything twice; they only give the
run's end state and token usage. Items:

- message (user / developer / assistant) -> a turn; developer becomes system;
- reasoning -> the readable summary (and any plain reasoning text) of the next assistant turn; the
  encrypted blob is dropped;
- function_call, custom_tool_call (apply_patch's free-form input), local_shell_call,
  web_search_call -> a tool call of an assistant turn: calls the model made together, with no
  result in between, share one turn, as a chat template expects;
- function_call_output / custom_tool_call_output -> a tool turn; older Codex wrapped the text as
  ``{"output", "metadata": {"exit_code", "duration_seconds"}}``, kept as text plus meta;
- compacted -> a user turn holding the summary (source_role "compacted"): the context the model
  continued from.

The model is the turn_context's (meta keeps every model the session switched to); the title is the
first thing the user asked, since a session has no task id.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .base import (
    ParsedTrajectory,
    ParsedTurn,
    ReadContext,
    as_text,
    content_parts,
    iter_jsonl,
    join_text,
    normalise_arguments,
    normalise_timestamp,
)

ROLLOUT_TYPES = frozenset({"session_meta", "turn_context", "response_item", "event_msg", "compacted"})
_CALLS = frozenset({"function_call", "custom_tool_call", "local_shell_call", "web_search_call"})
_OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output"})
# Session fields worth keeping; the rest (git details, base instructions) can be long.
_SESSION_KEYS = ("id", "cli_version", "originator", "cwd", "source", "model_provider")
# User messages Codex writes itself before the prompt: context, not what was asked.
_CONTEXT_PREFIXES = ("<environment_context>", "<user_instructions>", "# AGENTS.md", "<INSTRUCTIONS>")
_END_EVENTS = {"task_complete": "submitted", "turn_aborted": "cancelled", "error": "error"}


def is_rollout_record(keys: set[str], kind: Any) -> bool:
    """Whether a first line with these keys (and this "type") starts a Codex rollout."""
    if {"type", "payload", "timestamp"} <= keys:
        return kind in ROLLOUT_TYPES
    # The older bare session line: {"id", "timestamp", "instructions", "git"?}.
    return {"id", "timestamp", "instructions"} <= keys and "type" not in keys


class _Session:
    """The run being built, item by item."""

    def __init__(self, source_name: str) -> None:
        self.trajectory = ParsedTrajectory(format="codex-cli", source_name=source_name, scaffold="codex-cli")
        self.turns = self.trajectory.turns
        self.meta = self.trajectory.meta
        self.reasoning = ""
        self.models: list[str] = []
        self.skipped: dict[str, int] = {}

    def add(self, turn: ParsedTurn) -> None:
        self.turns.append(turn)

    def calling_turn(self, when: str | None) -> ParsedTurn:
        """The assistant turn a new call belongs to: the last turn while no result followed it."""
        last = self.turns[-1] if self.turns else None
        if last is not None and last.role == "assistant":
            return last
        turn = ParsedTurn(role="assistant", source_role="assistant", timestamp=when, reasoning=self.take_reasoning())
        self.add(turn)
        return turn

    def take_reasoning(self) -> str:
        reasoning, self.reasoning = self.reasoning, ""
        return reasoning


def _reasoning_text(item: dict[str, Any]) -> str:
    parts = []
    for key in ("summary", "content"):
        for part in item.get(key) or []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
    return join_text(*parts)


def _call(item: dict[str, Any]) -> dict[str, Any]:
    kind = item["type"]
    call_id = item.get("call_id") or item.get("id")
    if kind == "local_shell_call":
        action = item.get("action") if isinstance(item.get("action"), dict) else {}
        arguments = {k: v for k, v in action.items() if k != "type" and v is not None}
        return {"id": as_text(call_id) or None, "name": "local_shell", "arguments": arguments}
    if kind == "web_search_call":
        action = item.get("action") if isinstance(item.get("action"), dict) else {}
        return {"id": as_text(call_id) or None, "name": "web_search", "arguments": action}
    if kind == "custom_tool_call":
        arguments: Any = as_text(item.get("input"))  # free-form (apply_patch): kept as written
    else:
        arguments = normalise_arguments(item.get("arguments"))
    return {"id": as_text(call_id) or None, "name": as_text(item.get("name")), "arguments": arguments}


def _output(item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A call's output as text, and its exit code and duration where Codex recorded them."""
    output = item.get("output")
    meta: dict[str, Any] = {}
    if isinstance(output, dict):  # the older object form {content, success}
        if output.get("success") is False:
            meta["success"] = False
        output = output.get("content")
    if isinstance(output, list):  # content items (text and images) of an MCP tool's result
        text, _, meta_parts, _ = content_parts(output, "output")
        return text, {**meta, **meta_parts}
    text = as_text(output)
    wrapped = normalise_arguments(text) if text.startswith("{") else None
    if isinstance(wrapped, dict) and "output" in wrapped:
        details = wrapped.get("metadata") if isinstance(wrapped.get("metadata"), dict) else {}
        meta.update({k: details[k] for k in ("exit_code", "duration_seconds") if k in details})
        text = as_text(wrapped["output"])
    return text, meta


def _response_item(session: _Session, item: dict[str, Any], when: str | None) -> None:
    kind = item.get("type")
    if kind == "message":
        text, reasoning, meta, calls = content_parts(item.get("content"), "content")
        role = as_text(item.get("role")) or "user"
        ours = {"developer": "system", "system": "system", "assistant": "assistant"}.get(role, "user")
        if ours == "assistant":
            reasoning = join_text(session.take_reasoning(), reasoning)
        session.add(ParsedTurn(role=ours, text=text, reasoning=reasoning, tool_calls=calls, timestamp=when,
                               source_role=role, meta=meta))
    elif kind == "reasoning":
        session.reasoning = join_text(session.reasoning, _reasoning_text(item))
    elif kind in _CALLS:
        turn = session.calling_turn(when)
        turn.tool_calls.append(_call(item))
        if kind == "custom_tool_call" or kind == "local_shell_call":
            turn.meta.setdefault("codex_call_types", []).append(kind)
    elif kind in _OUTPUTS:
        text, meta = _output(item)
        session.add(ParsedTurn(role="tool", text=text, tool_call_id=as_text(item.get("call_id")) or None,
                               timestamp=when, source_role=kind, meta=meta))
    else:
        # ghost snapshots, encrypted compaction items: nothing the model reads as text.
        session.skipped[str(kind)] = session.skipped.get(str(kind), 0) + 1


def _line(session: _Session, record: dict[str, Any]) -> None:
    kind, payload = record.get("type"), record.get("payload")
    when = normalise_timestamp(record.get("timestamp"))
    if "payload" not in record:
        if "record_type" in record:
            return  # the older format's state markers
        if kind is None and {"id", "timestamp"} <= set(record):
            payload, kind = record, "session_meta"
        else:
            payload, kind = record, "response_item"  # the older format's bare items
    if not isinstance(payload, dict):
        return
    if kind == "session_meta":
        session.meta.update({f"session_{k}" if k == "id" else k: payload[k] for k in _SESSION_KEYS if k in payload})
        session.trajectory.format_version = as_text(payload.get("cli_version"))
        session.trajectory.started_at = session.trajectory.started_at or normalise_timestamp(payload.get("timestamp"))
    elif kind == "turn_context":
        model = payload.get("model")
        if isinstance(model, str) and model and model not in session.models:
            session.models.append(model)
        for key in ("effort", "approval_policy"):
            if isinstance(payload.get(key), str):
                session.meta[key] = payload[key]
    elif kind == "response_item":
        _response_item(session, payload, when)
    elif kind == "compacted":
        session.add(ParsedTurn(role="user", text=as_text(payload.get("message")), timestamp=when,
                               source_role="compacted", meta={"compacted": True}))
    elif kind == "event_msg":
        event = payload.get("type")
        if event in _END_EVENTS:
            session.trajectory.end_state = _END_EVENTS[event]
        elif event == "token_count" and isinstance(payload.get("info"), dict):
            usage = payload["info"].get("total_token_usage")
            if isinstance(usage, dict):
                session.meta["token_usage"] = usage


def _title(turns: list[ParsedTurn]) -> str:
    for turn in turns:
        text = turn.text.strip()
        if turn.role == "user" and turn.source_role == "user" and text and not text.startswith(_CONTEXT_PREFIXES):
            return text.splitlines()[0][:200]
    return ""


def read_codex(ctx: ReadContext) -> Iterator[ParsedTrajectory]:
    """One session per file."""
    session = _Session(ctx.name)
    for _number, record in iter_jsonl(ctx):
        if isinstance(record, dict):
            _line(session, record)
    trajectory = session.trajectory
    trajectory.model = session.models[0] if session.models else ""
    if len(session.models) > 1:
        trajectory.meta["models"] = session.models
    if session.skipped:
        trajectory.meta["skipped_items"] = session.skipped
    trajectory.title = _title(trajectory.turns)
    yield trajectory
