"""Inspect AI logs: one run per sample.

.eval: a zip of header.json (or _journal/start.json while a run is still going) and
samples/<id>_epoch_<n>.json, read one member at a time, each streamed through a reader that
counts decompressed bytes (KLONG_MAX_UNPACKED_MEMBER_BYTES per member, KLONG_MAX_UNPACKED_BYTES
in all). Members are deflated (inspect-ai before 0.3.2xx) or zstd-compressed (method 93, what
current inspect-ai writes), read through apps.core.archives; a method nobody reads is a record
error naming it. JSON log: {version, status, eval, plan, results, stats, samples[], reductions}, with
samples streamed one by one. Only the header and sample fields used below are kept.

A sample's messages are the turns. Content is a string or a list of parts (text, reasoning
with an encrypted blob and a readable summary, images); strings Inspect moved out to
sample.attachments ("attachment://<hash>") are put back. A run is titled by its task, sample id
and, when the eval ran several epochs, the epoch; its first score (Inspect's C / I / P / N or a
number) becomes the run's score, and the sample's scores and metadata stay in its meta. Turn timestamps come from events:
a model event's completion for the assistant message it produced, a tool event's completion
for its result. Events are otherwise left unread: each model event repeats the whole input.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

from apps.core.archives import UnreadableMember, open_member
from apps.core.untrusted import UnpackBudget, UnpackedTooLarge

from .base import (
    ParsedTrajectory,
    ReadContext,
    RecordError,
    fill_times_from_turns,
    json_path,
    normalise_timestamp,
    within,
)
from .chat import parse_messages
from .jsonstream import (
    JsonPath,
    JsonSyntaxError,
    SkipRule,
    iter_document,
    load_document,
)

# The only event fields read; the rest (inputs, tool lists, state patches) is skipped unread.
_EVENT_KEYS = frozenset({"event", "timestamp", "completed", "id", "output"})
# The only sample and header fields read (parse_sample); the rest (input, metadata, store, plan,
# results...) is skipped unread.
_SAMPLE_KEYS = frozenset({
    "id", "epoch", "uuid", "messages", "attachments", "events", "output", "scores", "model_usage",
    "total_time", "working_time", "error", "limit", "started_at", "completed_at", "metadata",
})
_HEADER_KEYS = frozenset({"version", "eval"})
_EVAL_SPEC_KEYS = frozenset({"task", "model", "eval_id", "run_id", "task_id", "config"})
_ATTACHMENT = "attachment://"
# A member that cannot be decompressed: damaged, or in a compression nobody here reads.
_UNREADABLE = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, UnreadableMember)
# Inspect's value_to_float for its letter grades: correct, incorrect, partial, no answer.
_GRADES = {"C": 1.0, "I": 0.0, "P": 0.5, "N": 0.0}


def _skip_unread(depth: int) -> SkipRule:
    """Skip rule for a sample at path[:depth] (0 in a .eval member, 2 in a JSON log): its unread
    fields, and the bodies of its events."""

    def skip(path: JsonPath) -> bool:
        if len(path) == depth + 1:
            return path[depth] not in _SAMPLE_KEYS
        return (
            len(path) == depth + 3
            and path[depth] == "events"
            and isinstance(path[depth + 1], int)
            and path[depth + 2] not in _EVENT_KEYS
        )

    return skip


def _skip_unread_header(path: JsonPath) -> bool:
    """Skip rule for header.json, and for the top of a JSON log (where samples are read)."""
    if len(path) == 1:
        return path[0] not in _HEADER_KEYS and path[0] != "samples"
    return len(path) == 2 and path[0] == "eval" and path[1] not in _EVAL_SPEC_KEYS


def _resolve_attachments(value: Any, attachments: dict[str, Any]) -> Any:
    if isinstance(value, str):
        if value.startswith(_ATTACHMENT):
            found = attachments.get(value[len(_ATTACHMENT) :])
            return found if isinstance(found, str) else value
        return value
    if isinstance(value, list):
        return [_resolve_attachments(v, attachments) for v in value]
    if isinstance(value, dict):
        return {k: _resolve_attachments(v, attachments) for k, v in value.items()}
    return value


def _event_times(events: Any) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(time by assistant message id, time by tool call id, all event times in order)."""
    by_message: dict[str, str] = {}
    by_call: dict[str, str] = {}
    times: list[str] = []
    if not isinstance(events, list):
        return by_message, by_call, times
    for event in events:
        if not isinstance(event, dict):
            continue
        start = normalise_timestamp(event.get("timestamp"))
        if start:
            times.append(start)
        done = normalise_timestamp(event.get("completed")) or start
        if not done:
            continue
        if event.get("event") == "model":
            output = event.get("output") if isinstance(event.get("output"), dict) else {}
            for choice in output.get("choices") or []:
                message = choice.get("message") if isinstance(choice, dict) else None
                if isinstance(message, dict) and isinstance(message.get("id"), str):
                    by_message.setdefault(message["id"], done)
        elif event.get("event") == "tool" and isinstance(event.get("id"), str):
            by_call.setdefault(event["id"], done)
    return by_message, by_call, times


def parse_sample(
    sample: Any, header: dict[str, Any], where: str, *, format: str, source_name: str
) -> ParsedTrajectory:
    if not isinstance(sample, dict):
        raise RecordError(f"sample must be an object, not {type(sample).__name__}", where)
    messages = sample.get("messages")
    attachments = sample.get("attachments")
    if isinstance(attachments, dict) and attachments:
        messages = _resolve_attachments(messages, attachments)
    turns = parse_messages(messages, f"{where}.messages")
    by_message, by_call, times = _event_times(sample.get("events"))
    for turn, message in zip(turns, messages, strict=True):
        for key, meta_key in (("source", "source"), ("function", "tool_name"), ("error", "error")):
            if message.get(key) is not None:
                turn.meta[meta_key] = message[key]
        if turn.role == "assistant":
            turn.timestamp = turn.timestamp or by_message.get(str(turn.meta.get("id")))
        elif turn.role == "tool" and turn.tool_call_id:
            turn.timestamp = turn.timestamp or by_call.get(turn.tool_call_id)
    eval_spec = header.get("eval") if isinstance(header.get("eval"), dict) else {}
    task_name = str(eval_spec.get("task") or "")
    sample_id = sample.get("id")
    task = f"{task_name}:{sample_id}" if task_name else str(sample_id or "")
    output = sample.get("output") if isinstance(sample.get("output"), dict) else {}
    if sample.get("error"):
        end_state: str | None = "error"
    elif sample.get("limit"):
        # A token, message or time limit cut the run off: KLong's forced truncation.
        end_state = "timed_out"
    elif output.get("choices"):
        end_state = "submitted"
    else:
        end_state = None
    meta: dict[str, Any] = {"sample_id": sample_id, "epoch": sample.get("epoch")}
    for key in ("eval_id", "run_id", "task", "task_id"):
        if eval_spec.get(key) is not None:
            meta[f"eval_{key}" if not key.startswith("eval") else key] = eval_spec[key]
    for key in ("uuid", "scores", "metadata", "model_usage", "total_time", "working_time", "error", "limit"):
        if sample.get(key) is not None:
            meta[key] = sample[key]
    score, scorer = _first_score(sample.get("scores"))
    if scorer:
        meta["score_from"] = scorer
    trajectory = ParsedTrajectory(
        format=format,
        source_name=source_name,
        format_version=str(header.get("version") or ""),
        model=str(eval_spec.get("model") or output.get("model") or ""),
        scaffold="inspect-ai",
        task=task,
        title=_title(task, sample.get("epoch"), eval_spec),
        score=score,
        started_at=normalise_timestamp(sample.get("started_at")) or (times[0] if times else None),
        ended_at=normalise_timestamp(sample.get("completed_at")) or (times[-1] if times else None),
        end_state=end_state,
        meta=meta,
        turns=turns,
    )
    fill_times_from_turns(trajectory)
    return trajectory


def _title(task: str, epoch: Any, eval_spec: dict[str, Any]) -> str:
    """The task and sample id, and the epoch when the eval ran the sample more than once."""
    config = eval_spec.get("config") if isinstance(eval_spec.get("config"), dict) else {}
    epochs = config.get("epochs")
    several = not isinstance(epochs, int) or epochs > 1  # unknown: say it, titles stay apart
    return f"{task} (epoch {epoch})" if several and isinstance(epoch, int) else task


def _first_score(scores: Any) -> tuple[float | None, str]:
    """The first scorer's value as a number (Inspect's letter grades mapped as its value_to_float
    does), and that scorer's name; (None, "") when no scorer gave a number."""
    if not isinstance(scores, dict):
        return None, ""
    for name, score in scores.items():
        value = score.get("value") if isinstance(score, dict) else None
        if isinstance(value, bool):
            return float(value), str(name)
        if isinstance(value, int | float):
            return float(value), str(name)
        if isinstance(value, str) and value.strip().upper() in _GRADES:
            return _GRADES[value.strip().upper()], str(name)
    return None, ""


def _member_document(
    archive: zipfile.ZipFile, name: str, ctx: ReadContext, budget: UnpackBudget, skip: SkipRule
) -> Any:
    """One member parsed while it is decompressed, never more than the budget allows."""
    info = archive.getinfo(name)
    budget.check_declared(name, info.file_size)
    with open_member(archive, info) as raw, budget.open(raw, name) as fp:
        return load_document(fp, skip=skip, max_depth=ctx.limits.json_depth)


def read_inspect_eval(ctx: ReadContext) -> Iterator[ParsedTrajectory]:
    try:
        archive = zipfile.ZipFile(ctx.path)
    except (zipfile.BadZipFile, OSError) as exc:
        ctx.bad("", f"damaged zip archive: {exc}")
        return
    budget = UnpackBudget(ctx.limits, "the .eval archive")
    with archive:
        names = archive.namelist()
        header_name = next((n for n in ("header.json", "_journal/start.json") if n in names), None)
        members = [n for n in names if n.startswith("samples/") and n.endswith(".json")]
        try:
            budget.check_declared("", 0, sum(archive.getinfo(n).file_size for n in [header_name, *members] if n))
        except UnpackedTooLarge as exc:
            ctx.bad("", str(exc))
            return
        header: dict[str, Any] = {}
        if header_name:
            try:
                loaded = _member_document(archive, header_name, ctx, budget, _skip_unread_header)
            except JsonSyntaxError as exc:
                ctx.bad(within(header_name, json_path(exc.path)), f"unreadable header: {exc.message}")
                loaded = {}
            except (*_UNREADABLE, UnpackedTooLarge) as exc:
                ctx.bad(header_name, f"unreadable header: {exc}")
                loaded = {}
            header = loaded if isinstance(loaded, dict) else {}
        skip = _skip_unread(0)
        if not members:
            ctx.bad(
                "samples/", "the archive holds no samples (was the eval run with log_samples off?)"
            )
        for name in members:
            if budget.exhausted:
                return
            try:
                sample = _member_document(archive, name, ctx, budget, skip)
            except JsonSyntaxError as exc:
                ctx.bad(within(name, json_path(exc.path)), exc.message)
                continue
            except UnpackedTooLarge as exc:
                ctx.bad(name, str(exc))
                continue
            except _UNREADABLE as exc:
                ctx.bad(name, f"unreadable archive member: {exc}")
                continue
            try:
                trajectory = parse_sample(
                    sample, header, "$", format="inspect-ai-eval", source_name=ctx.record_name(name)
                )
            except RecordError as exc:
                ctx.bad(within(name, exc.position), exc.message)
                continue
            yield trajectory


def read_inspect_json(ctx: ReadContext) -> Iterator[ParsedTrajectory]:
    """Stream samples[]; header fields written before it (eval comes first) are at hand.

    Should a writer put eval after samples, the samples seen before it wait in memory until it
    arrives: correctness first, streaming where the file allows.
    """
    header: dict[str, Any] = {}
    waiting: list[tuple[int, Any]] = []
    seen = 0
    sample_skip = _skip_unread(2)

    def skip(path: JsonPath) -> bool:
        return _skip_unread_header(path) or (len(path) > 2 and path[0] == "samples" and sample_skip(path))

    def parse(index: int, sample: Any) -> ParsedTrajectory | None:
        position = f"$.samples[{index}]"
        try:
            return parse_sample(
                sample,
                header,
                position,
                format="inspect-ai-json",
                source_name=ctx.record_name(position),
            )
        except RecordError as exc:
            ctx.bad(exc.position or position, exc.message)
            return None

    try:
        with ctx.path.open("rb") as fp:
            for kind, key, value in iter_document(
                fp, skip=skip, stream=("samples",), max_depth=ctx.limits.json_depth
            ):
                if kind == "top":
                    header[key] = value
                    if key == "eval":
                        for waiting_index, waiting_sample in waiting:
                            if (done := parse(waiting_index, waiting_sample)) is not None:
                                yield done
                        waiting.clear()
                elif kind == "item":
                    seen += 1
                    if "eval" not in header:
                        waiting.append((key, value))
                    elif (done := parse(key, value)) is not None:
                        yield done
                elif not isinstance(value, dict):
                    ctx.bad("$", "an Inspect AI JSON log holds an object")
                elif not seen:
                    ctx.bad(
                        "$.samples",
                        "the log holds no samples (was the eval run with log_samples off?)",
                    )
    except JsonSyntaxError as exc:
        ctx.bad(json_path(exc.path), exc.message)
    for waiting_index, waiting_sample in waiting:
        if (done := parse(waiting_index, waiting_sample)) is not None:
            yield done
