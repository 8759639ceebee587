"""SWE-agent .traj files and mini-swe-agent trajectories.

SWE-agent: {environment, trajectory[], history[], info, replay_config?}. The turns come from
history, which is what the model saw; trajectory[] is skipped while parsing because every step
repeats the whole message list (quadratic in the run's length). Old files have no tool role:
actions stay in the assistant text and observations are user messages, kept as they are.

mini-swe-agent: {info, messages[], trajectory_format, instance_id?} or a bare message list.
v1 keeps actions as bash blocks in assistant text (kept as text, not turned into tool calls
the model never made); v1.1 uses OpenAI tool calls and tool messages; both may end with an
"exit" message holding the submission, which becomes a user turn (source_role "exit").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from apps.core.untrusted import loads_json

from .base import (
    ParsedTrajectory,
    ReadContext,
    RecordError,
    end_state_from_status,
    join_text,
    normalise_timestamp,
    read_single_document,
)
from .chat import parse_chat_message, parse_messages
from .jsonstream import JsonPath


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _skip_swe_agent(path: JsonPath) -> bool:
    return path == ("trajectory",)


def parse_swe_agent(document: Any, source_name: str) -> ParsedTrajectory:
    if not isinstance(document, dict):
        raise RecordError("a SWE-agent .traj file holds an object", "$")
    history = document.get("history")
    if not isinstance(history, list):
        raise RecordError("no history list (SWE-agent keeps the messages there)", "$.history")
    turns = []
    for index, message in enumerate(history):
        where = f"$.history[{index}]"
        turn = parse_chat_message(message, where)
        ids = message.get("tool_call_ids")
        if turn.tool_call_id is None and isinstance(ids, list) and ids:
            turn.tool_call_id = str(ids[0])
            if len(ids) > 1:
                turn.meta["tool_call_ids"] = [str(i) for i in ids]
        for key in ("message_type", "agent", "is_demo"):
            if message.get(key) is not None:
                turn.meta[key] = message[key]
        if not turn.tool_calls and isinstance(message.get("action"), str):
            turn.meta["action"] = message["action"]
        turns.append(turn)
    info = _dict(document.get("info"))
    config = document.get("replay_config")
    if isinstance(config, str):
        # Some SWE-agent versions store the run config as a JSON string.
        try:
            config = loads_json(config)
        except ValueError:
            config = None
    config = _dict(config)
    model_config = _dict(_dict(config.get("agent")).get("model"))
    model = model_config.get("name") or model_config.get("model_name") or ""
    problem = _dict(config.get("problem_statement"))
    meta: dict[str, Any] = {}
    for key in ("exit_status", "submission", "model_stats"):
        if info.get(key) is not None:
            meta[key] = info[key]
    if document.get("environment") is not None:
        meta["environment"] = document["environment"]
    return ParsedTrajectory(
        format="swe-agent",
        source_name=source_name,
        format_version="tool-calls" if any(t.tool_calls for t in turns) else "text-actions",
        model=str(model),
        scaffold="swe-agent",
        task=str(problem.get("id") or ""),
        end_state=end_state_from_status(info.get("exit_status")),
        meta=meta,
        turns=turns,
    )


def read_swe_agent(ctx: ReadContext) -> Iterator[ParsedTrajectory]:
    return read_single_document(
        ctx, lambda doc: parse_swe_agent(doc, ctx.name), skip=_skip_swe_agent
    )


def _first_choice_message(response: Any) -> dict[str, Any]:
    choices = _dict(response).get("choices")
    if isinstance(choices, list) and choices:
        return _dict(_dict(choices[0]).get("message"))
    return {}


def parse_mini_swe_agent(document: Any, source_name: str) -> ParsedTrajectory:
    if isinstance(document, list):
        wrapper: dict[str, Any] = {}
        messages: Any = document
        base = "$"
    elif isinstance(document, dict):
        wrapper, messages, base = document, document.get("messages"), "$.messages"
    else:
        raise RecordError("a mini-swe-agent trajectory is an object or a list of messages", "$")
    turns = parse_messages(messages, base)
    model = ""
    for turn, message in zip(turns, messages, strict=True):
        extra = _dict(message.get("extra"))
        if not extra:
            continue
        response = _dict(extra.get("response"))
        turn.timestamp = (
            turn.timestamp
            or normalise_timestamp(extra.get("timestamp"))
            or normalise_timestamp(response.get("created"))
        )
        if response:
            # The provider's own message carries what the trajectory's copy dropped: reasoning.
            reply = _first_choice_message(response)
            for key in ("reasoning_content", "reasoning"):
                if isinstance(reply.get(key), str) and reply[key] not in turn.reasoning:
                    turn.reasoning = join_text(turn.reasoning, reply[key])
            if isinstance(response.get("model"), str):
                turn.meta["model"] = response["model"]
                model = model or response["model"]
        for key in ("returncode", "exit_status"):
            if extra.get(key) is not None:
                turn.meta[key] = extra[key]
        if extra.get("exception_info"):
            turn.meta["exception_info"] = extra["exception_info"]
    info = _dict(wrapper.get("info"))
    model_config = _dict(_dict(info.get("config")).get("model"))
    meta: dict[str, Any] = {}
    for key in ("exit_status", "submission", "model_stats", "mini_version"):
        if info.get(key) is not None:
            meta[key] = info[key]
    version = wrapper.get("trajectory_format")
    exit_status = info.get("exit_status")
    if exit_status is None and turns and turns[-1].source_role == "exit":
        exit_status = turns[-1].meta.get("exit_status")
    return ParsedTrajectory(
        format="mini-swe-agent",
        source_name=source_name,
        format_version=version if isinstance(version, str) else "",
        model=str(model_config.get("model_name") or model),
        scaffold="mini-swe-agent",
        task=str(wrapper.get("instance_id") or ""),
        end_state=end_state_from_status(exit_status),
        meta=meta,
        turns=turns,
    )


def read_mini_swe_agent(ctx: ReadContext) -> Iterator[ParsedTrajectory]:
    return read_single_document(ctx, lambda doc: parse_mini_swe_agent(doc, ctx.name))
