"""The parsed trajectory model every reader produces, and the helpers they share.

No Django here: the importer service, the management command and the tests all use these
plain dataclasses, and the service maps them onto the ORM models.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apps.core.domain import Invalid
from apps.core.untrusted import InputLimits, JsonTooDeep, json_depth_message, loads_json

from .jsonstream import JsonSyntaxError, SkipRule, load_document

ROLES = ("system", "user", "assistant", "tool")
END_STATES = ("submitted", "timed_out", "cancelled", "error")

# Roles other tools use that mean one of ours. Anything not listed becomes "user": the model
# sees the text in its context but is never trained on it, the safe side for a role we cannot
# interpret (mini-swe-agent's final "exit" message holding the submission is one).
_ROLE_ALIASES = {
    "developer": "system",  # OpenAI's newer name for the system role
    "function": "tool",  # OpenAI's legacy function-call result
    "ipython": "tool",  # Llama 3 tool output
    "model": "assistant",  # Gemini
    "human": "user",
}


@dataclass(kw_only=True)
class ParsedTurn:
    """One message or step of a trajectory.

    role: one of ROLES. source_role: the role exactly as the file named it ("developer",
    "exit", an OpenHands event source...). tool_calls: [{"id", "name", "arguments"}] where
    arguments is a dict when the file held a JSON object (as an object or as a JSON string),
    else the raw value. timestamp: an ISO 8601 string or None. meta: small per-format extras
    (message ids, exit codes, step metrics), never the raw message again.
    """

    role: str
    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_call_id: str | None = None
    reasoning: str = ""
    timestamp: str | None = None
    source_role: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class ParsedTrajectory:
    """One agent run read from a file.

    format: the detected format name (see FORMATS). format_version: the variant inside it
    ("mini-swe-agent-1.1", "ATIF-v1.5", "v0"...), "" when the file does not say. source_name:
    the file name, plus the record's position in brackets when the file holds several runs.
    task: an identifier of the task (instance id, sample id), not its text: the text is in the
    turns. title: what the list shows ("" = the task, else the source name): set where the task
    alone does not tell runs apart (an Inspect sample's epochs) or a format has no task id (a
    Codex session's first prompt). score: the run's own score where the format records one.
    paper: a paper reference carried by our own JSONL format, "" elsewhere.
    started_at / ended_at: ISO 8601 strings or None. end_state: one of END_STATES or None.
    """

    format: str
    source_name: str
    format_version: str = ""
    model: str = ""
    scaffold: str = ""
    task: str = ""
    title: str = ""
    score: float | None = None
    paper: str = ""
    started_at: str | None = None
    ended_at: str | None = None
    end_state: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    turns: list[ParsedTurn] = field(default_factory=list)


@dataclass(frozen=True)
class Problem:
    """A record skipped with skip_bad=True: where it was and what was wrong with it."""

    position: str
    message: str

    def __str__(self) -> str:
        return f"{self.position}: {self.message}" if self.position else self.message


class TrajectoryFormatError(Invalid, ValueError):
    """A file that cannot be read: unknown format, malformed line or record.

    position says where: "line 7" for JSONL, a JSON path such as "$.messages[3]" inside a
    document, a zip member name inside an Inspect .eval archive. ``message`` is the bare reason.
    """

    def __init__(self, message: str, *, source: str = "", position: str = "") -> None:
        super().__init__(": ".join(part for part in (source, position, message) if part))
        self.message = message
        self.source = source
        self.position = position


class RecordError(Exception):
    """Raised inside a reader for one bad record; the reader turns it into an error or a Problem."""

    def __init__(self, message: str, position: str = "") -> None:
        self.message = message
        self.position = position
        super().__init__(f"{position}: {message}" if position else message)


def json_path(path: tuple[str | int, ...] | list[str | int]) -> str:
    """Render ("messages", 3, "content") as "$.messages[3].content"."""
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def within(outer: str, inner: str) -> str:
    """Join a record's position and a position inside it: "line 3, $.messages[2]"."""
    if not inner or inner == outer:
        return outer
    return f"{outer}, {inner}"


def map_role(raw: Any) -> tuple[str, str]:
    """Return (our role, the original role as a string)."""
    source = raw if isinstance(raw, str) else ("" if raw is None else str(raw))
    key = source.strip().lower()
    if key in ROLES:
        return key, source
    return _ROLE_ALIASES.get(key, "user"), source


def as_text(value: Any) -> str:
    """A text field that should be a string: None is empty, anything else is shown as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def join_text(*parts: str, sep: str = "\n\n") -> str:
    return sep.join(p for p in parts if p)


# Content parts that are a tool call, in the shapes seen in the wild: Anthropic tool_use, LangChain
# and Codex-style tool_call, Responses API function_call, the Vercel AI SDK's tool-call.
TOOL_CALL_PARTS = frozenset({"tool_call", "tool_use", "function_call", "tool-call"})


def content_text(content: Any, where: str) -> tuple[str, str, dict[str, Any]]:
    """Flatten message content into (text, reasoning, meta); tool-call parts are left out (see
    content_parts for them)."""
    text, reasoning, meta, _calls = content_parts(content, where)
    return text, reasoning, meta


def merge_tool_calls(calls: list[dict[str, Any]], more: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``calls`` plus those of ``more`` not already in it (same id, or same name and arguments when
    ids are missing): a log that records a call both as a content part and in tool_calls shows,
    counts and trains it once."""
    seen = {(c["id"],) if c["id"] else (c["name"], json.dumps(c["arguments"], sort_keys=True)) for c in calls}
    merged = list(calls)
    for call in more:
        key = (call["id"],) if call["id"] else (call["name"], json.dumps(call["arguments"], sort_keys=True))
        if key not in seen:
            seen.add(key)
            merged.append(call)
    return merged


def content_parts(content: Any, where: str) -> tuple[str, str, dict[str, Any], list[dict[str, Any]]]:
    """Flatten message content into (text, reasoning, meta, tool calls).

    Content is a string, None, or a list of parts in the OpenAI / Anthropic / Inspect shapes.
    Text parts are joined with newlines (as Inspect does); reasoning and thinking parts go to
    reasoning. A redacted reasoning block keeps only its readable summary, since the encrypted
    blob is useless for training. Tool-call parts (TOOL_CALL_PARTS) become tool calls, never
    text. Images and other non-text parts leave a "[image]"-style marker in the text, so the
    turn still shows that the model saw something there.
    """
    if content is None:
        return "", "", {}, []
    if isinstance(content, str):
        return content, "", {}, []
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        raise RecordError(
            f"content must be a string or a list of parts, not {type(content).__name__}", where
        )
    texts: list[str] = []
    reasoning: list[str] = []
    meta: dict[str, Any] = {}
    calls: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            raise RecordError(f"content part must be an object, not {type(part).__name__}", where)
        kind = part.get("type", "text")
        if kind in TOOL_CALL_PARTS:
            calls.append(normalise_tool_call(part, f"{where}[{index}]"))
        elif kind in ("text", "input_text", "output_text") or (kind is None and "text" in part):
            texts.append(as_text(part.get("text")))
        elif kind == "reasoning":
            if part.get("redacted"):
                meta["reasoning_redacted"] = True
                reasoning.append(as_text(part.get("summary")))
            else:
                reasoning.append(
                    as_text(part.get("reasoning") or part.get("text") or part.get("summary"))
                )
        elif kind == "thinking":
            reasoning.append(as_text(part.get("thinking")))
        elif kind == "redacted_thinking":
            meta["reasoning_redacted"] = True
        elif kind == "refusal":
            texts.append(as_text(part.get("refusal")))
        elif kind in (
            "image",
            "image_url",
            "input_image",
            "audio",
            "input_audio",
            "video",
            "document",
            "file",
        ):
            texts.append(f"[{kind.removeprefix('input_').removesuffix('_url')}]")
            meta.setdefault("non_text_parts", []).append(kind)
        elif isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            # An unknown part is shown as JSON rather than dropped.
            texts.append(json.dumps(part, ensure_ascii=False))
            meta.setdefault("non_text_parts", []).append(str(kind))
    return "\n".join(texts), join_text(*reasoning), meta, merge_tool_calls([], calls)


def thinking_blocks_text(blocks: Any) -> str:
    """Anthropic-style thinking blocks as LiteLLM passes them through ([{type, thinking}])."""
    if not isinstance(blocks, list):
        return ""
    return join_text(*(as_text(b.get("thinking")) for b in blocks if isinstance(b, dict)))


def normalise_arguments(arguments: Any) -> Any:
    """Tool-call arguments as a dict when they hold a JSON object, else unchanged.

    OpenAI sends a JSON string, Inspect and ATIF an object; chat templates want the object. A
    string that is not a JSON object (models do emit broken JSON, or JSON nested too deep) is
    kept verbatim.
    """
    if arguments is None:
        return {}
    if isinstance(arguments, str):
        try:
            parsed = loads_json(arguments)
        except ValueError:
            return arguments
        return parsed if isinstance(parsed, dict) else arguments
    return arguments


def normalise_tool_call(call: Any, where: str) -> dict[str, Any]:
    """One tool call as {"id", "name", "arguments"} from any of the shapes seen in the wild.

    OpenAI {id, function: {name, arguments}}, Inspect {id, function: name, arguments},
    ATIF {tool_call_id, function_name, arguments}, OpenHands SDK {id, name, arguments},
    Anthropic tool_use {id, name, input}, LangChain {id, name, args}, Responses API
    function_call {call_id, name, arguments}.
    """
    if not isinstance(call, dict):
        raise RecordError(f"tool call must be an object, not {type(call).__name__}", where)
    function = call.get("function")
    if isinstance(function, dict):
        name, arguments = function.get("name"), function.get("arguments")
    elif isinstance(function, str):
        name, arguments = function, call.get("arguments")
    else:
        name = call.get("name", call.get("function_name", call.get("toolName")))
        arguments = call.get("arguments", call.get("input", call.get("args")))
    # call_id first: a Responses API item's id names the item, its call_id the call results cite.
    call_id = next((call[k] for k in ("call_id", "id", "tool_call_id", "toolCallId") if call.get(k) is not None), None)
    return {
        "id": None if call_id is None else str(call_id),
        "name": as_text(name),
        "arguments": normalise_arguments(arguments),
    }


def normalise_timestamp(value: Any) -> str | None:
    """An ISO 8601 string, or None when the value is missing or not a time.

    Epoch numbers (seconds, or milliseconds when implausibly large) become UTC ISO strings;
    ISO strings are kept as written so no precision or offset is lost.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC).isoformat()
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value.strip():
        try:
            datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return value.strip()
    return None


def end_state_from_status(status: Any) -> str | None:
    """Map a scaffold's exit status onto END_STATES.

    Budget limits (steps, cost, context, time) count as timed_out: like KLong's forced
    truncation at a stage timeout, the run was cut off rather than finished. The raw status is
    always kept in meta by the caller.
    """
    if not isinstance(status, str) or not status.strip():
        return None
    key = status.strip().lower()
    if key.startswith("submitted") or key in ("submit", "finished", "success", "completed", "done"):
        return "submitted"
    if "cancel" in key or "interrupt" in key or "abort" in key:
        return "cancelled"
    if any(
        word in key
        for word in ("timeout", "time_limit", "timed_out", "limit", "exit_cost", "exit_context")
    ):
        return "timed_out"
    return "error"


def fill_times_from_turns(traj: ParsedTrajectory) -> None:
    """Use the first and last turn timestamps where the format gave no start or end."""
    stamps = [t.timestamp for t in traj.turns if t.timestamp]
    if stamps:
        traj.started_at = traj.started_at or stamps[0]
        traj.ended_at = traj.ended_at or stamps[-1]


def small_scalars(mapping: Any, *, max_len: int = 200) -> dict[str, Any]:
    """The short scalar entries of a dict, for meta: enough to filter on, never a big blob."""
    if not isinstance(mapping, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        short_text = isinstance(value, str) and len(value) <= max_len
        if value is None or isinstance(value, bool | int | float) or short_text:
            out[key] = value
    return out


class ReadContext:
    """State of one read: the file, whether bad records are skipped, and those skipped; the
    limits on untrusted input (JSON depth, decompressed bytes of an archive)."""

    def __init__(self, path: Path, *, skip_bad: bool, limits: InputLimits | None = None) -> None:
        self.path = path
        self.name = path.name
        self.skip_bad = skip_bad
        self.limits = limits or InputLimits.current()
        self.problems: list[Problem] = []

    def bad(self, position: str, message: str) -> None:
        """Report a bad record: raise, or with skip_bad list it and let the reader go on."""
        if not self.skip_bad:
            raise TrajectoryFormatError(message, source=self.name, position=position)
        self.problems.append(Problem(position, message))

    def record_name(self, position: str) -> str:
        """source_name of one of several runs in a file."""
        return f"{self.name} [{position}]"


def iter_jsonl_lines(ctx: ReadContext) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, value, None) for each non-blank line, or (number, raw bytes, error)."""
    with ctx.path.open("rb") as fp:
        for number, raw in enumerate(fp, start=1):
            line = raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw
            if not line.strip():
                continue
            try:
                value = loads_json(line, ctx.limits.json_depth)
            except UnicodeDecodeError as exc:
                yield number, line, f"not UTF-8 text ({exc.reason})"
                continue
            except json.JSONDecodeError as exc:
                yield number, line, f"invalid JSON: {exc.msg} (column {exc.colno})"
                continue
            except JsonTooDeep as exc:
                yield number, line, f"{json_depth_message(exc.limit)} at column {exc.column}"
                continue
            yield number, value, None


def iter_jsonl(ctx: ReadContext) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each good line; a bad line is reported through ctx.bad."""
    for number, value, error in iter_jsonl_lines(ctx):
        if error:
            ctx.bad(f"line {number}", error)
        else:
            yield number, value


def read_single_document(
    ctx: ReadContext, parse: Callable[[Any], ParsedTrajectory], *, skip: SkipRule | None = None
) -> Iterator[ParsedTrajectory]:
    """Read a file holding one run as one JSON document, less the skipped subtrees."""
    try:
        with ctx.path.open("rb") as fp:
            document = load_document(fp, skip=skip, max_depth=ctx.limits.json_depth)
    except JsonSyntaxError as exc:
        ctx.bad(json_path(exc.path), exc.message)
        return
    try:
        trajectory = parse(document)
    except RecordError as exc:
        ctx.bad(exc.position or "$", exc.message)
        return
    yield trajectory
