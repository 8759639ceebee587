"""Harbor's Agent Trajectory Interchange Format (ATIF, Terminal-Bench's trajectory.json).

{schema_version, session_id, agent: {name, version, model_name, tool_definitions}, steps[],
final_metrics, continued_trajectory_ref?}. A step has source (system / user / agent),
message (a string or content parts), reasoning_content, tool_calls and observation.results:
the tool results live inside the agent step that made the calls. So one step becomes its own
turn followed by one turn per result: a tool turn when the result names its call
(source_call_id), a user turn otherwise (Terminus sends terminal output back that way). A
result holding only subagent_trajectory_ref links (no content, no call) is no message: the
links go to the step turn's meta.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .base import (
    ParsedTrajectory,
    ParsedTurn,
    ReadContext,
    RecordError,
    as_text,
    content_parts,
    content_text,
    fill_times_from_turns,
    merge_tool_calls,
    normalise_timestamp,
    normalise_tool_call,
    read_single_document,
)

_STEP_ROLES = {"system": "system", "user": "user", "agent": "assistant"}
_STEP_META_KEYS = (
    "step_id",
    "model_name",
    "reasoning_effort",
    "metrics",
    "is_copied_context",
    "llm_call_count",
    "extra",
)


def _step_turns(step: Any, where: str) -> list[ParsedTurn]:
    if not isinstance(step, dict):
        raise RecordError(f"step must be an object, not {type(step).__name__}", where)
    source = as_text(step.get("source"))
    text, reasoning, meta, part_calls = content_parts(step.get("message"), f"{where}.message")
    if step.get("reasoning_content"):
        reasoning = "\n\n".join(p for p in (as_text(step["reasoning_content"]), reasoning) if p)
    raw_calls = step.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise RecordError("tool_calls must be a list", f"{where}.tool_calls")
    for key in _STEP_META_KEYS:
        if step.get(key) is not None:
            meta[key] = step[key]
    turn = ParsedTurn(
        # An unknown source is something the agent was shown: a user turn, never a target.
        role=_STEP_ROLES.get(source, "user"),
        text=text,
        tool_calls=merge_tool_calls(
            [normalise_tool_call(c, f"{where}.tool_calls[{i}]") for i, c in enumerate(raw_calls)], part_calls
        ),
        reasoning=reasoning,
        timestamp=normalise_timestamp(step.get("timestamp")),
        source_role=source,
        meta=meta,
    )
    turns = [turn]
    observation = step.get("observation")
    if observation is None:
        return turns
    results = observation.get("results") if isinstance(observation, dict) else None
    if not isinstance(results, list):
        raise RecordError("observation.results must be a list", f"{where}.observation")
    for index, result in enumerate(results):
        at = f"{where}.observation.results[{index}]"
        if not isinstance(result, dict):
            raise RecordError(f"result must be an object, not {type(result).__name__}", at)
        call_id = result.get("source_call_id")
        refs = result.get("subagent_trajectory_ref")
        if result.get("content") is None and call_id is None and refs:
            turn.meta.setdefault("subagent_trajectory_ref", []).extend(
                refs if isinstance(refs, list) else [refs]
            )
            continue
        result_text, _, result_meta = content_text(result.get("content"), f"{at}.content")
        result_meta["step_id"] = step.get("step_id")
        if refs:
            result_meta["subagent_trajectory_ref"] = refs
        turns.append(
            ParsedTurn(
                role="tool" if call_id is not None else "user",
                text=result_text,
                tool_call_id=None if call_id is None else str(call_id),
                source_role="observation",
                meta=result_meta,
            )
        )
    return turns


def parse_atif(document: Any, source_name: str) -> ParsedTrajectory:
    if not isinstance(document, dict):
        raise RecordError("an ATIF trajectory is an object", "$")
    steps = document.get("steps")
    if not isinstance(steps, list):
        raise RecordError("no steps list", "$.steps")
    turns: list[ParsedTurn] = []
    for index, step in enumerate(steps):
        turns.extend(_step_turns(step, f"$.steps[{index}]"))
    agent = document.get("agent") if isinstance(document.get("agent"), dict) else {}
    model = agent.get("model_name") or next(
        (t.meta["model_name"] for t in turns if isinstance(t.meta.get("model_name"), str)), ""
    )
    meta: dict[str, Any] = {}
    for key in (
        "session_id",
        "trajectory_id",
        "notes",
        "final_metrics",
        "continued_trajectory_ref",
        "extra",
    ):
        if document.get(key) is not None:
            meta[key] = document[key]
    if agent.get("version") is not None:
        meta["agent_version"] = agent["version"]
    if isinstance(agent.get("tool_definitions"), list):
        meta["tools"] = agent["tool_definitions"]
    trajectory = ParsedTrajectory(
        format="harbor-atif",
        source_name=source_name,
        format_version=as_text(document.get("schema_version")),
        model=as_text(model),
        scaffold=as_text(agent.get("name")),
        meta=meta,
        turns=turns,
    )
    fill_times_from_turns(trajectory)
    return trajectory


def read_atif(ctx: ReadContext) -> Iterator[ParsedTrajectory]:
    return read_single_document(ctx, lambda doc: parse_atif(doc, ctx.name))
