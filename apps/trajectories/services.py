"""Trajectory writes: import, review, annotations. The command, the pages, the API and the
import job all call these functions, never their own copy of the logic.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.core.domain import Invalid, NotFound
from apps.core.untrusted import InputLimits, clip_text
from apps.papers.models import Paper
from apps.trajectories.formats import (
    ParsedTrajectory,
    TrajectoryFormatError,
    read_trajectories,
)
from apps.trajectories.models import AnnotationLabel, Trajectory, Turn, TurnAnnotation
from apps.trajectories.tokens import TokenCounter, counter_for, turn_text

log = logging.getLogger(__name__)

TURN_BATCH = 1000
# Texts cut per run that the import report names one by one (the count covers the rest).
CLIPPED_LISTED = 20
ABANDONED_IMPORT_S = 24 * 3600
# Files a folder import never tries to read as trajectories.
_SKIPPED_SUFFIXES = (".md", ".txt", ".rst")


class TrajectoryImportError(Invalid, ValueError):
    """An import that failed as a whole (nothing was written): what and where."""

    def __init__(self, message: str, *, source: str = "", position: str = "") -> None:
        self.source = source
        self.position = position
        super().__init__(": ".join(p for p in (source, position, message) if p))

    def as_dict(self) -> dict[str, str]:
        return {"detail": str(self), "source": self.source, "position": self.position}

    def body(self) -> dict[str, str]:
        return {**self.as_dict(), "detail": f"Nothing was imported. {self}"}


class TrajectoryEditError(Invalid, ValueError):
    """A review, pinned prefix or annotation that does not fit this trajectory."""


@dataclass(frozen=True)
class ImportedTrajectory:
    id: int
    format: str
    turns: int
    title: str
    source_name: str
    # Texts longer than KLONG_MAX_TURN_CHARS, cut to their head and tail: "turn 12 text (300,000,000
    # characters)", the first CLIPPED_LISTED of clipped_count.
    clipped: tuple[str, ...] = ()
    clipped_count: int = 0


@dataclass
class ImportResult:
    trajectories: list[ImportedTrajectory] = field(default_factory=list)
    # "file: position: message" of each record skipped (skip_bad=True only).
    skipped: list[str] = field(default_factory=list)
    tokenizer: str = ""
    # "source name: turn 12 text (300,000,000 characters)" for the first texts cut.
    clipped: list[str] = field(default_factory=list)
    clipped_count: int = 0
    clip_limit: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "trajectories": [t.__dict__ for t in self.trajectories],
            "skipped": self.skipped,
            "tokenizer": self.tokenizer,
            "estimated_tokens": self.tokenizer == "",
            "clipped": self.clipped,
            **({"clipped_note": self.clip_note()} if self.clipped else {}),
        }

    def add_clipped(self, imported: ImportedTrajectory) -> None:
        self.clipped_count += imported.clipped_count
        room = CLIPPED_LISTED * 5 - len(self.clipped)
        self.clipped += [f"{imported.source_name}: {what}" for what in imported.clipped[:max(room, 0)]]

    def clip_note(self) -> str:
        more = self.clipped_count - len(self.clipped)
        return (f"Texts longer than {self.clip_limit:,} characters (KLONG_MAX_TURN_CHARS) were stored as their "
                "head and tail with a marker saying how much was cut: " + "; ".join(self.clipped)
                + (f"; and {more} more" if more > 0 else ""))


def configured_tokenizer_path() -> str:
    """KLONG_TOKENIZER_PATH: a local tokenizer folder; empty means estimated counts."""
    return settings.KLONG_TOKENIZER_PATH


def token_counter() -> TokenCounter:
    return counter_for(configured_tokenizer_path())


def _files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    if not path.is_dir():
        raise TrajectoryImportError(f"no such file or folder: {path}")
    for child in sorted(path.rglob("*")):
        hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
        if child.is_file() and not hidden and child.suffix.lower() not in _SKIPPED_SUFFIXES:
            yield child


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = parse_datetime(value)
    if parsed is not None and timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)  # formats without an offset log UTC
    return parsed


def _clip_strings(value: Any, limit: int, note: str) -> tuple[Any, int]:
    """A JSON value with every string longer than ``limit`` clipped, and how many were."""
    if isinstance(value, str):
        return (clip_text(value, limit, note), 1) if len(value) > limit else (value, 0)
    if isinstance(value, dict):
        pairs = [(k, *_clip_strings(v, limit, note)) for k, v in value.items()]
        return {k: v for k, v, _ in pairs}, sum(n for _, _, n in pairs)
    if isinstance(value, list):
        pairs = [_clip_strings(v, limit, note) for v in value]
        return [v for v, _ in pairs], sum(n for _, n in pairs)
    return value, 0


def clip_long_texts(parsed: ParsedTrajectory, limit: int) -> list[str]:
    """Cut every text longer than ``limit`` characters (turn text, reasoning, tool-call arguments,
    meta) to its head and tail, with a marker saying how much was cut. A text that long cannot be
    trained on, and stored whole it slows every page that reads it. Returns what was cut."""
    note = f"KLONG_MAX_TURN_CHARS = {limit:,}"
    cut: list[str] = []
    for index, turn in enumerate(parsed.turns):
        for name in ("text", "reasoning"):
            value = getattr(turn, name)
            if len(value) > limit:
                cut.append(f"turn {index} {name} ({len(value):,} characters)")
                setattr(turn, name, clip_text(value, limit, note))
        for call in turn.tool_calls:
            arguments = call["arguments"]
            text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
            if len(text) > limit:
                # Kept as a string, as arguments that are not a JSON object are.
                cut.append(f"turn {index} tool call arguments ({len(text):,} characters)")
                call["arguments"] = clip_text(text, limit, note)
        turn.meta, count = _clip_strings(turn.meta, limit, note)
        if count:
            cut.append(f"turn {index} meta ({count} texts)")
    parsed.meta, count = _clip_strings(parsed.meta, limit, note)
    if count:
        cut.append(f"meta ({count} texts)")
    return cut


def _save_trajectory(
    parsed: ParsedTrajectory,
    *,
    paper: Paper | None,
    source: str,
    counter: TokenCounter,
    user: Any,
    batch: str = "",
) -> ImportedTrajectory:
    """Write one run in one short transaction: everything slow (clipping, token counting) first."""
    limit = settings.KLONG_MAX_TURN_CHARS
    clipped = clip_long_texts(parsed, limit)
    if paper is None and parsed.paper:
        paper = Paper.objects.filter(slug=parsed.paper).first()
    started, ended = _when(parsed.started_at), _when(parsed.ended_at)
    counts = counter.count([turn_text(t.text, t.reasoning, t.tool_calls) for t in parsed.turns])
    source_name = parsed.source_name
    meta = {"format_version": parsed.format_version, **parsed.meta}
    if clipped:
        meta["clipped"] = {"limit": limit, "count": len(clipped), "first": clipped[:CLIPPED_LISTED]}
    trajectory = Trajectory(
        paper=paper,
        title=(parsed.title or parsed.task or source_name)[:300],
        source=source,
        source_format=parsed.format,
        model_name=parsed.model[:200],
        scaffold=parsed.scaffold[:100],
        task=parsed.task[:300],
        source_name=source_name[:500],
        started_at=started,
        ended_at=ended,
        wall_time_s=(ended - started).total_seconds() if started and ended else None,
        end_state=parsed.end_state or "",
        final_score=parsed.score,
        turn_count=len(parsed.turns),
        total_tokens=sum(counts),
        tokenizer=counter.name,
        meta=meta,
        imported_by=user if getattr(user, "is_authenticated", False) else None,
        import_batch=batch,
    )
    turns = [
        Turn(
            trajectory=trajectory,
            index=index,
            role=turn.role,
            text=turn.text,
            reasoning=turn.reasoning,
            tool_calls=turn.tool_calls,
            tool_call_id=(turn.tool_call_id or "")[:200],
            timestamp=_when(turn.timestamp),
            token_count=tokens,
            source_role=turn.source_role[:40],
            meta=turn.meta,
        )
        for index, (turn, tokens) in enumerate(zip(parsed.turns, counts, strict=True))
    ]
    with transaction.atomic():
        trajectory.save()
        Turn.objects.bulk_create(turns, batch_size=TURN_BATCH)
    return ImportedTrajectory(
        trajectory.pk, parsed.format, len(parsed.turns), trajectory.title, source_name,
        tuple(clipped[:CLIPPED_LISTED]), len(clipped),
    )


def discard_import(batch: str) -> None:
    """Delete the hidden runs of an import that failed or was killed (its turns go with them)."""
    with transaction.atomic():
        Trajectory.all_objects.filter(import_batch=batch).delete()


def _discard_abandoned_imports() -> None:
    # An import writes a run at least every few minutes; a batch silent for a day was killed.
    cutoff = timezone.now() - timedelta(seconds=ABANDONED_IMPORT_S)
    batches = (
        Trajectory.all_objects.exclude(import_batch="").values("import_batch")
        .annotate(last=Max("created_at")).filter(last__lt=cutoff).values_list("import_batch", flat=True)
    )
    for batch in list(batches):
        discard_import(batch)


def import_trajectories(
    path: str | Path,
    *,
    paper: Paper | None = None,
    skip_bad: bool = False,
    format: str | None = None,
    user: Any = None,
    source: str = Trajectory.Source.IMPORTED,
    on_trajectory: Callable[[ImportedTrajectory], None] | None = None,
    batch: str = "",
) -> ImportResult:
    """Import every run in a file, or in every file of a folder (recursively, sorted).

    Streams: the readers hold one run in memory at a time. All or nothing by default: the first
    bad record (or undetectable file) raises TrajectoryImportError with its position and nothing
    is kept. With skip_bad=True bad records and unreadable files are skipped and listed in the
    result. ``on_trajectory`` is called after each run (progress for the import job, lines for
    the command).

    Transactions stay short, so readers and other writers never wait for a long import (SQLite
    has one writer at a time): each run is written in its own transaction, hidden under the
    import's ``batch``, and one UPDATE shows them all at the end. A failed import deletes its
    hidden runs; a killed one leaves them hidden until an import with the same ``batch`` (the
    job's next attempt) or a day's silence removes them.
    """
    counter = token_counter()
    limits = InputLimits.current()
    result = ImportResult(tokenizer=counter.name, clip_limit=settings.KLONG_MAX_TURN_CHARS)
    root = Path(path)
    batch = batch or f"import-{uuid.uuid4().hex}"
    discard_import(batch)  # what a killed earlier attempt of the same job left
    _discard_abandoned_imports()

    def run_file(file: Path) -> None:
        name = str(file.relative_to(root)) if root.is_dir() else file.name
        try:
            reader = read_trajectories(file, skip_bad=skip_bad, format=format, limits=limits)
            for parsed in reader:
                imported = _save_trajectory(
                    parsed, paper=paper, source=source, counter=counter, user=user, batch=batch
                )
                result.trajectories.append(imported)
                result.add_clipped(imported)
                if on_trajectory is not None:
                    on_trajectory(imported)
            result.skipped += [f"{name}: {problem}" for problem in reader.problems]
        except TrajectoryFormatError as exc:
            if not skip_bad:
                raise TrajectoryImportError(exc.message, source=name, position=exc.position) from exc
            result.skipped.append(f"{name}: {': '.join(p for p in (exc.position, exc.message) if p)}")

    try:
        for file in _files(root):
            run_file(file)
    except BaseException:
        # A bad record in the last file undoes the first; so does any failure (nothing half-imported).
        try:
            discard_import(batch)
        except Exception:
            # The database went away too: the hidden runs stay hidden until swept.
            log.exception("could not discard import %s", batch)
        raise
    with transaction.atomic():
        Trajectory.all_objects.filter(import_batch=batch).update(import_batch="")
    return result


# ------------------------------------------------------------------ review and annotations


@transaction.atomic
def review_trajectory(trajectory: Trajectory, review: str, reason: str, user: Any) -> Trajectory:
    """Accept or reject a trajectory for training datasets ("" clears the decision)."""
    if review not in ("", *Trajectory.Review.values):
        raise TrajectoryEditError(f"review must be accepted, rejected or empty, not {review!r}")
    if review == Trajectory.Review.REJECTED and not reason.strip():
        raise TrajectoryEditError("a rejection needs a reason")
    trajectory.review = review
    trajectory.review_reason = reason.strip()
    trajectory.reviewed_by = user if review else None
    trajectory.reviewed_at = timezone.now() if review else None
    trajectory.save(update_fields=["review", "review_reason", "reviewed_by", "reviewed_at"])
    return trajectory


def set_no_loss(trajectory: Trajectory, turn_index: int, no_loss: bool) -> Turn:
    turn = Turn.objects.filter(trajectory=trajectory, index=turn_index).first()
    if turn is None:
        raise NotFound("no such turn")
    turn.no_loss = no_loss
    turn.save(update_fields=["no_loss"])
    return turn


def set_prefix_end(trajectory: Trajectory, prefix_end: int | None) -> Trajectory:
    """"Pin prefix up to here": the split uses it instead of the automatic rule."""
    if prefix_end is not None and not -1 <= prefix_end < trajectory.turn_count:
        raise TrajectoryEditError(f"prefix end must be between -1 and {trajectory.turn_count - 1}")
    trajectory.prefix_end = prefix_end
    trajectory.save(update_fields=["prefix_end"])
    return trajectory


def annotate_turn(
    trajectory: Trajectory, turn_index: int, label: AnnotationLabel, note: str, user: Any
) -> TurnAnnotation:
    if not 0 <= turn_index < trajectory.turn_count:
        raise TrajectoryEditError(f"turn {turn_index} is not in this trajectory (0..{trajectory.turn_count - 1})")
    return TurnAnnotation.objects.create(
        trajectory=trajectory, turn_index=turn_index, label=label, note=note.strip(), author=user
    )


# ------------------------------------------------------------------ token counts


def recount_tokens(trajectory: Trajectory, counter: TokenCounter | None = None) -> Trajectory:
    """Count every turn again with the configured tokenizer (or the estimate), in one batch.

    Used when a tokenizer is configured after an import: the split plans on these counts.
    """
    counter = counter or token_counter()
    turns = list(trajectory.turns.order_by("index").only("id", "text", "reasoning", "tool_calls", "token_count"))
    counts = counter.count([turn_text(t.text, t.reasoning, t.tool_calls) for t in turns])
    for turn, tokens in zip(turns, counts, strict=True):
        turn.token_count = tokens
    with transaction.atomic():
        Turn.objects.bulk_update(turns, ["token_count"], batch_size=TURN_BATCH)
        trajectory.total_tokens = sum(counts)
        trajectory.tokenizer = counter.name
        trajectory.save(update_fields=["total_tokens", "tokenizer"])
    return trajectory


DEFAULT_LABELS = (
    ("error", "#b03a2e", "The agent made a mistake here."),
    ("fabricated result", "#7d3c98", "A number or claim not backed by a run."),
    ("blacklisted access", "#000000", "Touches a URL on the paper's blacklist."),
    ("good recovery", "#1e8449", "The agent noticed and fixed a problem."),
)


def ensure_default_labels() -> None:
    """The starting label set (migration 0002 seeds it; a flushed test database needs it again)."""
    for name, color, description in DEFAULT_LABELS:
        AnnotationLabel.objects.get_or_create(name=name, defaults={"color": color, "description": description})
