"""OpenHands trajectories (event lists) and evaluation outputs (output.jsonl).

"openhands": a JSON list of events, or an object holding it under trajectory / history /
events. "openhands-jsonl": one evaluated instance per line, its events under history, with
instance_id, instruction, test_result, metadata, error beside them.

V0 events carry action + args or observation + content + extras (older files put the args
and extras flat on the event and have no source or ids); V1 SDK events are discriminated by
kind. Agent actions become assistant turns with one tool call each (the call the model made,
from tool_call_metadata, when recorded; otherwise the action and its arguments under an id
"openhands-<event>"); observations become tool turns answering the action they were caused
by (in old files with no cause: the latest unanswered action of the same kind), or user turns
when they answer no action. Messages become user / assistant / system turns by their source.

Bookkeeping events the model never sees (agent state changes, null actions and
observations, pauses, condensation requests) are not turns; they are counted in
meta["skipped_events"] so nothing disappears without a trace.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from .base import (
    ParsedTrajectory,
    ParsedTurn,
    ReadContext,
    RecordError,
    as_text,
    content_text,
    fill_times_from_turns,
    iter_jsonl,
    join_text,
    normalise_timestamp,
    normalise_tool_call,
    read_single_document,
    small_scalars,
    thinking_blocks_text,
    within,
)
from .chat import parse_chat_message

_V0_SKIPPED_ACTIONS = frozenset(
    {"null", "change_agent_state", "recall", "condensation", "condensation_request"}
)
_V0_SKIPPED_OBSERVATIONS = frozenset({"null", "agent_state_changed"})
_V1_SKIPPED_KINDS = frozenset(
    {"PauseEvent", "ConversationStateUpdateEvent", "Condensation", "CondensationRequest"}
)
# Envelope fields of a V0 event; in old flat events everything else is an argument or extra.
_V0_ENVELOPE = frozenset(
    {
        "id",
        "timestamp",
        "source",
        "message",
        "action",
        "observation",
        "cause",
        "tool_call_metadata",
        "timeout",
        "llm_metrics",
    }
)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _first_choice_message(response: Any) -> dict[str, Any]:
    choices = _dict(response).get("choices")
    if isinstance(choices, list) and choices:
        return _dict(_dict(choices[0]).get("message"))
    return {}


class _EventReader:
    """Turns one run's events into turns, remembering which tool calls are still unanswered."""

    def __init__(self) -> None:
        self.turns: list[ParsedTurn] = []
        self.skipped: Counter[str] = Counter()
        self.pending: list[tuple[str, str]] = []  # (action name, tool call id), oldest first
        self.call_by_event: dict[Any, str] = {}
        self.seen_responses: set[str] = set()
        self.seen_agent_action = False
        self.finished = False
        self.model = ""
        self.versions: set[str] = set()

    def read(self, event: Any, index: int, where: str) -> None:
        if not isinstance(event, dict):
            raise RecordError(f"event must be an object, not {type(event).__name__}", where)
        if "kind" in event:
            self.versions.add("v1")
            turn = self._v1(event, where)
        elif "action" in event:
            self.versions.add("v0")
            turn = self._v0_action(event, index)
        elif "observation" in event:
            self.versions.add("v0")
            turn = self._v0_observation(event)
        else:
            raise RecordError("event has no action, observation or kind", where)
        if turn is None:
            return
        turn.timestamp = turn.timestamp or normalise_timestamp(event.get("timestamp"))
        if event.get("id") is not None:
            turn.meta.setdefault("event_id", event["id"])
        self.turns.append(turn)

    def _answer(self, call_id: str) -> None:
        self.pending = [p for p in self.pending if p[1] != call_id]

    # V0 ------------------------------------------------------------------------------------

    def _v0_action(self, event: dict[str, Any], index: int) -> ParsedTurn | None:
        action = as_text(event["action"])
        if action in _V0_SKIPPED_ACTIONS:
            self.skipped[f"action:{action}"] += 1
            return None
        args = (
            event["args"]
            if isinstance(event.get("args"), dict)
            else {k: v for k, v in event.items() if k not in _V0_ENVELOPE}
        )
        source = event.get("source")
        meta: dict[str, Any] = {"action": action}
        if action in ("message", "system"):
            if action == "system":
                role = "system"
            elif source in ("user", "environment"):
                role = "user"
            elif source == "agent":
                role = "assistant"
            else:
                # Old files have no source: the task message opens the run, the agent's own
                # messages come after it has acted.
                role = "assistant" if self.seen_agent_action else "user"
            text = as_text(args["content"]) if "content" in args else as_text(event.get("message"))
            if isinstance(args.get("tools"), list):
                meta["tools"] = args["tools"]
            return ParsedTurn(role=role, text=text, source_role=as_text(source), meta=meta)
        if source in ("user", "environment"):
            # An action a person took (a command typed in the terminal): context, not a target.
            text = as_text(
                args.get("command")
                or args.get("code")
                or args.get("content")
                or event.get("message")
            )
            return ParsedTurn(role="user", text=text, source_role=as_text(source), meta=meta)
        self.seen_agent_action = True
        if action == "finish":
            self.finished = True
        arguments = {k: v for k, v in args.items() if k != "thought"}
        reasoning = ""
        recorded = _dict(event.get("tool_call_metadata"))
        if recorded.get("tool_call_id"):
            call_id = str(recorded["tool_call_id"])
            name = as_text(recorded.get("function_name")) or action
            response = _dict(recorded.get("model_response"))
            reply = _first_choice_message(response)
            for call in reply.get("tool_calls") or []:
                if isinstance(call, dict) and str(call.get("id")) == call_id:
                    arguments = normalise_tool_call(call, "")["arguments"]
            if isinstance(response.get("model"), str):
                self.model = self.model or response["model"]
            # One model response can yield several actions; its reasoning belongs to the first.
            response_id = str(response.get("id") or call_id)
            if response_id not in self.seen_responses:
                self.seen_responses.add(response_id)
                reasoning = join_text(
                    as_text(reply.get("reasoning_content")),
                    thinking_blocks_text(reply.get("thinking_blocks")),
                )
        else:
            call_id = f"openhands-{event['id'] if event.get('id') is not None else index}"
            name = action
            meta["synthetic_tool_call_id"] = True
        self.pending.append((action, call_id))
        if event.get("id") is not None:
            self.call_by_event[event["id"]] = call_id
        return ParsedTurn(
            role="assistant",
            text=as_text(args.get("thought")),
            tool_calls=[{"id": call_id, "name": name, "arguments": arguments}],
            reasoning=reasoning,
            source_role=as_text(source) or "agent",
            meta=meta,
        )

    def _v0_observation(self, event: dict[str, Any]) -> ParsedTurn | None:
        observation = as_text(event["observation"])
        if observation in _V0_SKIPPED_OBSERVATIONS:
            self.skipped[f"observation:{observation}"] += 1
            return None
        extras = (
            event["extras"]
            if isinstance(event.get("extras"), dict)
            else {k: v for k, v in event.items() if k not in _V0_ENVELOPE and k != "content"}
        )
        recorded = _dict(event.get("tool_call_metadata"))
        call_id: str | None = None
        if recorded.get("tool_call_id"):
            call_id = str(recorded["tool_call_id"])
        elif event.get("cause") is not None:
            call_id = self.call_by_event.get(event["cause"])
        elif self.pending:
            same_kind = [p for p in self.pending if p[0] == observation]
            call_id = (same_kind or self.pending)[-1][1]
        if call_id:
            self._answer(call_id)
        text = as_text(event["content"]) if "content" in event else as_text(event.get("message"))
        return ParsedTurn(
            role="tool" if call_id else "user",
            text=text,
            tool_call_id=call_id,
            source_role=as_text(event.get("source")) or "environment",
            meta={"observation": observation, **small_scalars(extras)},
        )

    # V1 ------------------------------------------------------------------------------------

    def _v1(self, event: dict[str, Any], where: str) -> ParsedTurn | None:
        kind = as_text(event["kind"])
        source = as_text(event.get("source"))
        if kind in _V1_SKIPPED_KINDS:
            self.skipped[kind] += 1
            return None
        meta: dict[str, Any] = {"kind": kind}
        if kind == "SystemPromptEvent":
            text, _, _ = content_text(event.get("system_prompt"), f"{where}.system_prompt")
            if isinstance(event.get("tools"), list):
                meta["tools"] = event["tools"]
            return ParsedTurn(role="system", text=text, source_role=source, meta=meta)
        if kind == "MessageEvent":
            turn = parse_chat_message(_dict(event.get("llm_message")), f"{where}.llm_message")
            turn.source_role = source or turn.source_role
            turn.meta.update(meta)
            if event.get("extended_content"):
                extended, _, _ = content_text(
                    event["extended_content"], f"{where}.extended_content"
                )
                turn.meta["extended_content"] = extended
            return turn
        if kind == "ActionEvent":
            text, reasoning, extra = content_text(event.get("thought") or None, f"{where}.thought")
            reasoning = join_text(
                reasoning,
                as_text(event.get("reasoning_content")),
                thinking_blocks_text(event.get("thinking_blocks")),
            )
            action = _dict(event.get("action"))
            if isinstance(event.get("tool_call"), dict):
                call = normalise_tool_call(event["tool_call"], f"{where}.tool_call")
            else:
                call = {
                    "id": as_text(event.get("tool_call_id")) or None,
                    "name": as_text(event.get("tool_name")),
                    "arguments": {k: v for k, v in action.items() if k != "kind"},
                }
            if action.get("kind") == "FinishAction" or call["name"] == "finish":
                self.finished = True
            meta.update(extra)
            if action.get("kind"):
                meta["action"] = action["kind"]
            return ParsedTurn(
                role="assistant",
                text=text,
                tool_calls=[call],
                reasoning=reasoning,
                source_role=source,
                meta=meta,
            )
        call_id = as_text(event.get("tool_call_id")) or None
        if kind == "ObservationEvent":
            observation = _dict(event.get("observation"))
            if "content" in observation:
                text, _, extra = content_text(
                    observation["content"], f"{where}.observation.content"
                )
                meta.update(extra)
            elif "output" in observation:
                text = as_text(observation["output"])
            else:
                text = as_text(observation.get("message") or observation.get("text"))
            meta["observation"] = as_text(observation.get("kind"))
            exit_code = observation.get("exit_code")
            if exit_code is None:
                exit_code = _dict(observation.get("metadata")).get("exit_code")
            if exit_code is not None:
                meta["exit_code"] = exit_code
            if observation.get("error"):
                meta["error"] = observation["error"]
        elif kind == "UserRejectObservation":
            text = as_text(event.get("rejection_reason"))
        elif kind == "AgentErrorEvent":
            text = as_text(event.get("error"))
        elif kind == "CondensationSummaryEvent":
            # The summary replaces forgotten events in what the model sees next.
            return ParsedTurn(
                role="user", text=as_text(event.get("summary")), source_role=source, meta=meta
            )
        else:
            text = as_text(
                next(
                    (event[k] for k in ("message", "content", "text", "summary") if event.get(k)),
                    "",
                )
            )
            return ParsedTurn(role="user", text=text, source_role=source, meta=meta)
        if call_id:
            self._answer(call_id)
        return ParsedTurn(
            role="tool" if call_id else "user",
            text=text,
            tool_call_id=call_id,
            source_role=source,
            meta=meta,
        )


def _events_to_trajectory(
    events: Any, where: str, *, record: dict[str, Any], format: str, source_name: str
) -> ParsedTrajectory:
    if not isinstance(events, list):
        raise RecordError("the events must be a list", where)
    reader = _EventReader()
    for index, event in enumerate(events):
        reader.read(event, index, f"{where}[{index}]")
    metadata = _dict(record.get("metadata"))
    llm = _dict(metadata.get("llm") or metadata.get("llm_config"))
    issue = _dict(record.get("issue"))
    if record.get("instance_id") is not None:
        task = as_text(record["instance_id"])
    elif issue.get("repo"):
        task = f"{issue.get('owner', '')}/{issue['repo']}#{issue.get('number', '')}"
    else:
        task = ""
    meta: dict[str, Any] = {}
    for key in (
        "instance_id",
        "instruction",
        "test_result",
        "success",
        "error",
        "result_explanation",
    ):
        if record.get(key) is not None:
            meta[key] = record[key]
    if record.get("git_patch"):
        meta["submission"] = record["git_patch"]
    if metadata.get("agent_class"):
        meta["agent_class"] = metadata["agent_class"]
    if reader.skipped:
        meta["skipped_events"] = dict(reader.skipped)
    # The tools the agent declared (with its system prompt) are the run's: chat templates render them
    tools = next((t.meta["tools"] for t in reader.turns if isinstance(t.meta.get("tools"), list)), None)
    if tools is not None:
        meta["tools"] = tools
    error = record.get("error")
    trajectory = ParsedTrajectory(
        format=format,
        source_name=source_name,
        format_version="+".join(sorted(reader.versions)),
        model=as_text(llm.get("model")) or reader.model,
        scaffold="openhands",
        task=task,
        end_state="error" if error else ("submitted" if reader.finished else None),
        meta=meta,
        turns=reader.turns,
    )
    fill_times_from_turns(trajectory)
    return trajectory


def parse_openhands_document(document: Any, source_name: str) -> ParsedTrajectory:
    if isinstance(document, list):
        return _events_to_trajectory(
            document, "$", record={}, format="openhands", source_name=source_name
        )
    if isinstance(document, dict):
        for key in ("trajectory", "history", "events"):
            if key in document:
                return _events_to_trajectory(
                    document[key],
                    f"$.{key}",
                    record=document,
                    format="openhands",
                    source_name=source_name,
                )
    raise RecordError("expected a list of events or an object holding one", "$")


def read_openhands(ctx: ReadContext) -> Iterator[ParsedTrajectory]:
    return read_single_document(ctx, lambda doc: parse_openhands_document(doc, ctx.name))


def read_openhands_jsonl(ctx: ReadContext) -> Iterator[ParsedTrajectory]:
    for number, record in iter_jsonl(ctx):
        position = f"line {number}"
        try:
            if not isinstance(record, dict) or "history" not in record:
                raise RecordError("record has no history", position)
            trajectory = _events_to_trajectory(
                record["history"],
                "$.history",
                record=record,
                format="openhands-jsonl",
                source_name=ctx.record_name(position),
            )
        except RecordError as exc:
            ctx.bad(within(position, exc.position), exc.message)
            continue
        yield trajectory
