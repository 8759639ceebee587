"""Trajectory writes: import, review, annotations. The command, the pages, the API and the
import job all call these functions, never their own copy of the logic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.papers.models import Paper
from apps.trajectories.formats import (
    ParsedTrajectory,
    TrajectoryFormatError,
    read_trajectories,
)
from apps.trajectories.models import AnnotationLabel, Trajectory, Turn, TurnAnnotation
from apps.trajectories.tokens import TokenCounter, counter_for, turn_text

TURN_BATCH = 1000
# Files a folder import never tries to read as trajectories.
_SKIPPED_SUFFIXES = (".md", ".txt", ".rst")


class TrajectoryImportError(ValueError):
    """An import that failed as a whole (nothing was written): what and where."""

    def __init__(self, message: str, *, source: str = "", position: str = "") -> None:
        self.message = message
        self.source = source
        self.position = position
        super().__init__(": ".join(p for p in (source, position, message) if p))

    def as_dict(self) -> dict[str, str]:
        return {"detail": str(self), "source": self.source, "position": self.position}


@dataclass(frozen=True)
class ImportedTrajectory:
    id: int
    format: str
    turns: int
    title: str
    source_name: str


@dataclass
class ImportResult:
    trajectories: list[ImportedTrajectory] = field(default_factory=list)
    # "file: position: message" of each record skipped (skip_bad=True only).
    skipped: list[str] = field(default_factory=list)
    tokenizer: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "trajectories": [t.__dict__ for t in self.trajectories],
            "skipped": self.skipped,
            "tokenizer": self.tokenizer,
            "estimated_tokens": self.tokenizer == "",
        }


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


def _save_trajectory(
    parsed: ParsedTrajectory,
    *,
    paper: Paper | None,
    source: str,
    counter: TokenCounter,
    user: Any,
) -> ImportedTrajectory:
    if paper is None and parsed.paper:
        paper = Paper.objects.filter(slug=parsed.paper).first()
    started, ended = _when(parsed.started_at), _when(parsed.ended_at)
    counts = counter.count([turn_text(t.text, t.reasoning, t.tool_calls) for t in parsed.turns])
    source_name = parsed.source_name
    trajectory = Trajectory.objects.create(
        paper=paper,
        title=(parsed.task or source_name)[:300],
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
        turn_count=len(parsed.turns),
        total_tokens=sum(counts),
        tokenizer=counter.name,
        meta={"format_version": parsed.format_version, **parsed.meta},
        imported_by=user if getattr(user, "is_authenticated", False) else None,
    )
    batch: list[Turn] = []
    for index, (turn, tokens) in enumerate(zip(parsed.turns, counts, strict=True)):
        batch.append(
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
        )
        if len(batch) >= TURN_BATCH:
            Turn.objects.bulk_create(batch)
            batch = []
    Turn.objects.bulk_create(batch)
    return ImportedTrajectory(trajectory.pk, parsed.format, len(parsed.turns), trajectory.title, source_name)


def import_trajectories(
    path: str | Path,
    *,
    paper: Paper | None = None,
    skip_bad: bool = False,
    format: str | None = None,
    user: Any = None,
    source: str = Trajectory.Source.IMPORTED,
    on_trajectory: Callable[[ImportedTrajectory], None] | None = None,
) -> ImportResult:
    """Import every run in a file, or in every file of a folder (recursively, sorted).

    Streams: the readers hold one run in memory at a time, and its turns go to the database in
    batches of TURN_BATCH. All or nothing by default: the first bad record (or undetectable
    file) raises TrajectoryImportError with its position and nothing is kept. With
    skip_bad=True bad records and unreadable files are skipped and listed in the result, and
    each run is saved in its own transaction. ``on_trajectory`` is called after each run
    (progress for the import job, lines for the command).
    """
    counter = token_counter()
    result = ImportResult(tokenizer=counter.name)
    root = Path(path)

    def run_file(file: Path) -> None:
        name = str(file.relative_to(root)) if root.is_dir() else file.name
        try:
            reader = read_trajectories(file, skip_bad=skip_bad, format=format)
            for parsed in reader:
                with transaction.atomic():
                    imported = _save_trajectory(
                        parsed, paper=paper, source=source, counter=counter, user=user
                    )
                result.trajectories.append(imported)
                if on_trajectory is not None:
                    on_trajectory(imported)
            result.skipped += [f"{name}: {problem}" for problem in reader.problems]
        except TrajectoryFormatError as exc:
            if not skip_bad:
                raise TrajectoryImportError(exc.message, source=name, position=exc.position) from exc
            result.skipped.append(f"{name}: {': '.join(p for p in (exc.position, exc.message) if p)}")

    files = _files(root)
    if skip_bad:
        for file in files:
            run_file(file)
    else:
        # One transaction for the whole call: a bad record in the last file undoes the first.
        with transaction.atomic():
            for file in files:
                run_file(file)
    return result


# ------------------------------------------------------------------ review and annotations


@transaction.atomic
def review_trajectory(trajectory: Trajectory, review: str, reason: str, user: Any) -> Trajectory:
    """Accept or reject a trajectory for training datasets ("" clears the decision)."""
    if review not in ("", *Trajectory.Review.values):
        raise ValueError(f"review must be accepted, rejected or empty, not {review!r}")
    if review == Trajectory.Review.REJECTED and not reason.strip():
        raise ValueError("a rejection needs a reason")
    trajectory.review = review
    trajectory.review_reason = reason.strip()
    trajectory.reviewed_by = user if review else None
    trajectory.reviewed_at = timezone.now() if review else None
    trajectory.save(update_fields=["review", "review_reason", "reviewed_by", "reviewed_at"])
    return trajectory


def set_no_loss(trajectory: Trajectory, turn_index: int, no_loss: bool) -> Turn:
    turn = Turn.objects.get(trajectory=trajectory, index=turn_index)
    turn.no_loss = no_loss
    turn.save(update_fields=["no_loss"])
    return turn


def set_prefix_end(trajectory: Trajectory, prefix_end: int | None) -> Trajectory:
    """"Pin prefix up to here": the split uses it instead of the automatic rule."""
    if prefix_end is not None and not -1 <= prefix_end < trajectory.turn_count:
        raise ValueError(f"prefix end must be between -1 and {trajectory.turn_count - 1}")
    trajectory.prefix_end = prefix_end
    trajectory.save(update_fields=["prefix_end"])
    return trajectory


def annotate_turn(
    trajectory: Trajectory, turn_index: int, label: AnnotationLabel, note: str, user: Any
) -> TurnAnnotation:
    if not 0 <= turn_index < trajectory.turn_count:
        raise ValueError(f"turn {turn_index} is not in this trajectory (0..{trajectory.turn_count - 1})")
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
