"""KLong JSONL, our own trajectory format: write_klong_jsonl and its reader.

The format is specified in the package docstring (apps/trajectories/formats/__init__.py);
what is written reads back exactly, so export and import round-trip.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

from .base import (
    END_STATES,
    ROLES,
    ParsedTrajectory,
    ParsedTurn,
    Problem,
    ReadContext,
    RecordError,
    iter_jsonl_lines,
    normalise_timestamp,
)

VERSION = 1
_HEADER_FIELDS = ("source_name", "model", "scaffold", "task", "title", "paper")


def _dumps(value: dict[str, Any]) -> str:
    # ensure_ascii=False keeps non-Latin text readable; json escapes newlines, so one object
    # is always one line.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def write_klong_jsonl(trajectory: ParsedTrajectory, fp: IO[str]) -> None:
    """Append one trajectory (a header line and one line per turn) to a text file."""
    meta = dict(trajectory.meta)
    if trajectory.format == "klong-jsonl":
        # Re-exporting an import of our own format keeps the original origin.
        source_format = meta.pop("source_format", "")
        source_version = meta.pop("source_format_version", "")
    else:
        source_format, source_version = trajectory.format, trajectory.format_version
    header: dict[str, Any] = {
        "klong_trajectory": VERSION,
        "source_format": source_format,
        "source_format_version": source_version,
        "source_name": trajectory.source_name,
        "model": trajectory.model,
        "scaffold": trajectory.scaffold,
        "task": trajectory.task,
        "title": trajectory.title,
        "score": trajectory.score,
        "paper": trajectory.paper,
        "started_at": trajectory.started_at,
        "ended_at": trajectory.ended_at,
        "end_state": trajectory.end_state,
        "meta": meta,
    }
    fp.write(_dumps(header) + "\n")
    for turn in trajectory.turns:
        line: dict[str, Any] = {"role": turn.role, "text": turn.text}
        if turn.reasoning:
            line["reasoning"] = turn.reasoning
        if turn.tool_calls:
            line["tool_calls"] = turn.tool_calls
        if turn.tool_call_id is not None:
            line["tool_call_id"] = turn.tool_call_id
        if turn.timestamp is not None:
            line["timestamp"] = turn.timestamp
        if turn.source_role != turn.role:
            line["source_role"] = turn.source_role
        if turn.meta:
            line["meta"] = turn.meta
        fp.write(_dumps(line) + "\n")


def _optional_str(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise RecordError(f"{name} must be a string or null")


def _parse_header(header: dict[str, Any], source_name: str) -> ParsedTrajectory:
    version = header.get("klong_trajectory")
    if version != VERSION:
        raise RecordError(
            f"unsupported klong_trajectory version {version!r} (this reader knows {VERSION})"
        )
    fields = {}
    for name in _HEADER_FIELDS:
        fields[name] = _optional_str(header.get(name), name) or ""
    times = {}
    for name in ("started_at", "ended_at"):
        value = _optional_str(header.get(name), name)
        if value is not None and normalise_timestamp(value) is None:
            raise RecordError(f"{name} is not an ISO 8601 time: {value!r}")
        times[name] = value
    end_state = header.get("end_state")
    if end_state is not None and end_state not in END_STATES:
        raise RecordError(
            f"end_state must be one of {', '.join(END_STATES)} or null, not {end_state!r}"
        )
    score = header.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
        raise RecordError(f"score must be a number or null, not {score!r}")
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise RecordError("meta must be an object")
    meta = dict(meta)
    for name in ("source_format", "source_format_version"):
        if _optional_str(header.get(name), name):
            meta[name] = header[name]
    known = {
        "klong_trajectory",
        "source_format",
        "source_format_version",
        "started_at",
        "ended_at",
        "end_state",
        "score",
        "meta",
    }
    for key, value in header.items():
        if key not in known and key not in _HEADER_FIELDS:
            meta.setdefault(key, value)
    return ParsedTrajectory(
        format="klong-jsonl",
        format_version=str(VERSION),
        source_name=fields["source_name"] or source_name,
        model=fields["model"],
        scaffold=fields["scaffold"],
        task=fields["task"],
        title=fields["title"],
        score=None if score is None else float(score),
        paper=fields["paper"],
        started_at=times["started_at"],
        ended_at=times["ended_at"],
        end_state=end_state,
        meta=meta,
    )


def _parse_turn(line: dict[str, Any]) -> ParsedTurn:
    role = line.get("role")
    if role not in ROLES:
        raise RecordError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    text = line.get("text", "")
    reasoning = line.get("reasoning", "")
    if not isinstance(text, str) or not isinstance(reasoning, str):
        raise RecordError("text and reasoning must be strings")
    tool_calls = line.get("tool_calls", [])
    if not isinstance(tool_calls, list) or not all(
        isinstance(c, dict)
        and isinstance(c.get("name"), str)
        and (c.get("id") is None or isinstance(c["id"], str))
        for c in tool_calls
    ):
        raise RecordError('tool_calls must be a list of {"id", "name", "arguments"} objects')
    timestamp = _optional_str(line.get("timestamp"), "timestamp")
    if timestamp is not None and normalise_timestamp(timestamp) is None:
        raise RecordError(f"timestamp is not an ISO 8601 time: {timestamp!r}")
    meta = line.get("meta", {})
    if not isinstance(meta, dict):
        raise RecordError("meta must be an object")
    source_role = line.get("source_role", role)
    if not isinstance(source_role, str):
        raise RecordError("source_role must be a string")
    return ParsedTurn(
        role=role,
        text=text,
        reasoning=reasoning,
        tool_calls=[
            {"id": c.get("id"), "name": c["name"], "arguments": c.get("arguments", {})}
            for c in tool_calls
        ],
        tool_call_id=_optional_str(line.get("tool_call_id"), "tool_call_id"),
        timestamp=timestamp,
        source_role=source_role,
        meta=meta,
    )


def read_klong_jsonl(ctx: ReadContext) -> Iterator[ParsedTrajectory]:
    """Read header + turn lines.

    With skip_bad, a bad line drops the whole trajectory it belongs to (a run with a turn
    missing would train on a history that never happened); the problem names the bad line
    and the header line of the dropped trajectory.
    """
    current: ParsedTrajectory | None = None
    header_line = 0
    broken: Problem | None = None

    def fail(position: str, message: str) -> None:
        nonlocal broken
        if not ctx.skip_bad:
            ctx.bad(position, message)  # raises
        if current is None:
            ctx.problems.append(Problem(position, message))
        elif broken is None:
            broken = Problem(
                position, f"{message}; the trajectory from line {header_line} was skipped"
            )

    def finished() -> ParsedTrajectory | None:
        if current is not None and broken is not None:
            ctx.problems.append(broken)
            return None
        return current

    for number, value, error in iter_jsonl_lines(ctx):
        position = f"line {number}"
        # An unparseable line that mentions the header key is taken as a broken header, so
        # its turns are not glued onto the trajectory before it.
        if (isinstance(value, dict) and "klong_trajectory" in value) or (
            error is not None and b'"klong_trajectory"' in value
        ):
            if (done := finished()) is not None:
                yield done
            header_line, broken = number, None
            current = ParsedTrajectory(format="klong-jsonl", source_name=ctx.record_name(position))
            if error is not None:
                fail(position, error)
                continue
            try:
                current = _parse_header(value, ctx.record_name(position))
            except RecordError as exc:
                fail(position, f"bad header: {exc.message}")
            continue
        if current is None:
            fail(position, error or "a turn line before any header line")
            continue
        if error is not None:
            fail(position, error)
            continue
        if not isinstance(value, dict):
            fail(position, "a turn line must be an object")
            continue
        try:
            turn = _parse_turn(value)
        except RecordError as exc:
            fail(position, f"bad turn: {exc.message}")
            continue
        current.turns.append(turn)
    if (done := finished()) is not None:
        yield done
