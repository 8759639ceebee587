"""OpenAI-style chat messages, the shape most of the other formats build on.

"openai-chat" is a JSON file holding a bare list of messages, an object {"messages": [...],
"model"?, "tools"?, "metadata"?}, or a list of such objects (one run each).
"openai-chat-jsonl" holds one such object per line (the fine-tuning dataset layout).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .base import (
    END_STATES,
    ParsedTrajectory,
    ParsedTurn,
    ReadContext,
    RecordError,
    content_parts,
    end_state_from_status,
    iter_jsonl,
    join_text,
    json_path,
    map_role,
    merge_tool_calls,
    normalise_arguments,
    normalise_timestamp,
    normalise_tool_call,
    thinking_blocks_text,
    within,
)
from .jsonstream import JsonSyntaxError, iter_document

# Message keys copied to turn meta when present: identifiers and per-message training weights.
_META_KEYS = ("id", "name", "weight", "model")


def parse_chat_message(message: Any, where: str) -> ParsedTurn:
    """One chat message as a turn. Raises RecordError when it is not a message at all."""
    if not isinstance(message, dict):
        raise RecordError(f"message must be an object, not {type(message).__name__}", where)
    if "role" not in message:
        raise RecordError("message has no role", where)
    role, source_role = map_role(message["role"])
    text, reasoning, meta, part_calls = content_parts(message.get("content"), f"{where}.content")
    # Providers put visible chain of thought in different keys (DeepSeek reasoning_content,
    # OpenRouter reasoning, LiteLLM thinking_blocks); all of it is reasoning, not text.
    for key in ("reasoning_content", "reasoning", "thinking"):
        if isinstance(message.get(key), str):
            reasoning = join_text(reasoning, message[key])
    reasoning = join_text(reasoning, thinking_blocks_text(message.get("thinking_blocks")))
    if not text and isinstance(message.get("refusal"), str):
        text = message["refusal"]
    raw_calls = message.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise RecordError("tool_calls must be a list", f"{where}.tool_calls")
    tool_calls = [
        normalise_tool_call(call, f"{where}.tool_calls[{i}]") for i, call in enumerate(raw_calls)
    ]
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        tool_calls.append(
            {
                "id": None,
                "name": str(legacy.get("name") or ""),
                "arguments": normalise_arguments(legacy.get("arguments")),
            }
        )
    tool_calls = merge_tool_calls(tool_calls, part_calls)
    tool_call_id = message.get("tool_call_id")
    for key in _META_KEYS:
        if message.get(key) is not None:
            meta[key] = message[key]
    return ParsedTurn(
        role=role,
        text=text,
        tool_calls=tool_calls,
        tool_call_id=None if tool_call_id is None else str(tool_call_id),
        reasoning=reasoning,
        timestamp=normalise_timestamp(message.get("timestamp", message.get("created_at"))),
        source_role=source_role,
        meta=meta,
    )


def parse_messages(messages: Any, where: str) -> list[ParsedTurn]:
    if not isinstance(messages, list):
        raise RecordError("messages must be a list", where)
    return [parse_chat_message(m, f"{where}[{i}]") for i, m in enumerate(messages)]


def chat_record(record: Any, where: str, *, format: str, source_name: str) -> ParsedTrajectory:
    """A {"messages": [...]} object as a run; its other known keys fill the run's fields."""
    if not isinstance(record, dict):
        raise RecordError(f"record must be an object, not {type(record).__name__}", where)
    if "messages" not in record:
        raise RecordError("record has no messages", where)
    base = "$" if where.startswith("line ") else where
    turns = parse_messages(record["messages"], f"{base}.messages")
    model = record.get("model")
    if not isinstance(model, str):
        model = next(
            (
                t.meta["model"]
                for t in turns
                if t.role == "assistant" and isinstance(t.meta.get("model"), str)
            ),
            "",
        )
    meta: dict[str, Any] = {}
    for key in ("id", "tools", "metadata"):
        if record.get(key) is not None:
            meta[key] = record[key]
    end_state = record.get("end_state")
    return ParsedTrajectory(
        format=format,
        source_name=source_name,
        model=model,
        scaffold=str(record.get("scaffold") or ""),
        task=str(record.get("task") or ""),
        end_state=end_state
        if end_state is None or end_state in END_STATES
        else end_state_from_status(end_state),
        meta=meta,
        turns=turns,
    )


def _run_or_problem(
    ctx: ReadContext, record: Any, where: str, *, format: str, name: str
) -> ParsedTrajectory | None:
    try:
        return chat_record(record, where, format=format, source_name=name)
    except RecordError as exc:
        ctx.bad(
            within(where, exc.position) if where.startswith("line ") else exc.position or where,
            exc.message,
        )
        return None


def read_openai_chat(ctx: ReadContext) -> Iterator[ParsedTrajectory]:
    """A JSON document: a message list, one {"messages"} object, or a list of them.

    A list is streamed: whether its elements are messages or runs is decided by the first.
    """
    messages: list[Any] = []
    runs = False
    try:
        with ctx.path.open("rb") as fp:
            for kind, index, value in iter_document(fp, stream=(), max_depth=ctx.limits.json_depth):
                if kind == "item" and index == 0:
                    runs = isinstance(value, dict) and "messages" in value and "role" not in value
                if kind == "item" and not runs:
                    messages.append(value)
                elif kind == "item":
                    position = f"$[{index}]"
                    run = _run_or_problem(
                        ctx, value, position, format="openai-chat", name=ctx.record_name(position)
                    )
                    if run is not None:
                        yield run
                elif kind == "root" and isinstance(value, dict):
                    run = _run_or_problem(ctx, value, "$", format="openai-chat", name=ctx.name)
                    if run is not None:
                        yield run
                elif kind == "root" and not isinstance(value, list):
                    ctx.bad("$", "expected a list of messages or an object with messages")
                elif kind == "root" and not runs:
                    try:
                        turns = parse_messages(messages, "$")
                    except RecordError as exc:
                        ctx.bad(exc.position or "$", exc.message)
                        return
                    yield ParsedTrajectory(format="openai-chat", source_name=ctx.name, turns=turns)
    except JsonSyntaxError as exc:
        ctx.bad(json_path(exc.path), exc.message)


def read_openai_chat_jsonl(ctx: ReadContext) -> Iterator[ParsedTrajectory]:
    for number, record in iter_jsonl(ctx):
        position = f"line {number}"
        run = _run_or_problem(
            ctx, record, position, format="openai-chat-jsonl", name=ctx.record_name(position)
        )
        if run is not None:
            yield run
