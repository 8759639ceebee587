"""Record an agent run as a Trajectory while it happens.

    recorder = TrajectoryRecorder.start(paper=paper, source="distilled", model="teacher-x")
    result = run_agent(..., on_turn=recorder.add_turn)
    recorder.finish(result)

Each turn is committed as it is added (no transaction spans the run), its INSERT and the UPDATE of
the trajectory's counters together, so the trajectory page shows a running trajectory turn by turn
(``live`` is True until ``finish``). Turns that many sessions add at the same moment (a rollout
pool) share one commit (``_GroupCommit``). A run the blacklist monitor flagged is disqualified:
rejected with the URL as the reason, and each flagged turn annotated "blacklisted access".
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.trajectories.formats.base import normalise_tool_call
from apps.trajectories.models import AnnotationLabel, Trajectory, Turn, TurnAnnotation
from apps.trajectories.services import ensure_default_labels, token_counter
from apps.trajectories.tokens import turn_text

SCAFFOLD = "klong-agent"
BLACKLIST_LABEL = "blacklisted access"


def _when(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, tz=UTC) if epoch else None


class TrajectoryRecorder:
    def __init__(self, trajectory: Trajectory) -> None:
        self.trajectory = trajectory
        self.counter = token_counter()

    @classmethod
    def start(cls, *, paper: Any = None, source: str = Trajectory.Source.DISTILLED, model: str = "",
              policy_version: str = "", title: str = "", task: str = "", meta: dict[str, Any] | None = None,
              ) -> TrajectoryRecorder:
        if source not in Trajectory.Source.values:
            raise ValueError(f"unknown trajectory source {source!r}")
        counter = token_counter()
        trajectory = Trajectory.objects.create(
            paper=paper, source=source, model_name=model[:200], policy_version=str(policy_version)[:100],
            title=(title or f"{model or 'agent'} on {getattr(paper, 'slug', 'a task')}")[:300],
            scaffold=SCAFFOLD, source_format="klong-agent", task=task[:300], started_at=timezone.now(),
            live=True, tokenizer=counter.name, meta=dict(meta or {}),
        )
        return cls(trajectory)

    def add_turn(self, turn: Any) -> Turn:
        """Store one ``AgentTurn`` (its index is its position; a repeated index is an error)."""
        reasoning = getattr(turn, "reasoning", "") or ""
        # The agent's calls are OpenAI-shaped; trajectories keep {"id", "name", "arguments"}, as imported ones do.
        calls = [normalise_tool_call(call, f"turn {turn.index}") for call in turn.tool_calls or ()]
        text = turn_text(turn.content, reasoning, calls)
        tokens = self.counter.count([text])[0]
        meta = dict(getattr(turn, "meta", {}) or {})
        if turn.submission_commit:
            meta["submission_commit"] = turn.submission_commit
        meta["duration_s"] = round(max(0.0, turn.ended_at - turn.started_at), 3)
        row = Turn(
            trajectory=self.trajectory, index=turn.index, role=turn.role, text=turn.content, reasoning=reasoning,
            tool_calls=calls, tool_call_id=turn.tool_call_id or "",
            timestamp=_when(turn.ended_at), token_count=tokens, meta=_jsonable(meta),
            token_ids=[int(i) for i in getattr(turn, "token_ids", None) or ()],
            logprobs=[float(v) for v in getattr(turn, "logprobs", None) or ()],
        )
        if connection.in_atomic_block:
            # inside the caller's transaction: another thread's turns must not ride on a
            # transaction this caller may still roll back
            _write([row])
        else:
            _turns.commit(row)
        return row

    def finish(self, result: Any, *, submission_url: str = "", extra: dict[str, Any] | None = None) -> Trajectory:
        """Close the trajectory with the run's end state, usage and final commit."""
        trajectory = Trajectory.objects.get(pk=self.trajectory.pk)
        end_state = result.end_state if result.end_state in Trajectory.EndState.values else Trajectory.EndState.ERROR
        trajectory.end_state = end_state
        trajectory.ended_at = timezone.now()
        trajectory.wall_time_s = result.wall_s
        trajectory.live = False
        trajectory.submission_url = submission_url[:500]
        trajectory.meta = {
            **trajectory.meta, **(extra or {}),
            "final_commit": result.final_commit, "steps": result.steps, "flagged": result.flagged,
            "usage": result.usage, "error": result.error[:2000],
            "blacklist_hits": list(getattr(result, "blacklist_hits", []) or []),
        }
        fields = ["end_state", "ended_at", "wall_time_s", "live", "submission_url", "meta"]
        if result.flagged:
            hits = trajectory.meta["blacklist_hits"]
            trajectory.review = Trajectory.Review.REJECTED
            trajectory.review_reason = "Disqualified: touched a blacklisted URL " + ", ".join(
                sorted({h["url"] for h in hits})
            )
            trajectory.reviewed_at = timezone.now()
            fields += ["review", "review_reason", "reviewed_at"]
            self._annotate(hits)
        trajectory.save(update_fields=fields)
        self.trajectory = trajectory
        return trajectory

    def abandon(self, error: str) -> None:
        """The run could not finish (the engine failed): keep the turns, mark the end as an error."""
        Trajectory.objects.filter(pk=self.trajectory.pk, live=True).update(
            live=False, end_state=Trajectory.EndState.ERROR, ended_at=timezone.now(),
        )
        trajectory = Trajectory.objects.get(pk=self.trajectory.pk)
        trajectory.meta = {**trajectory.meta, "error": error[:2000]}
        trajectory.save(update_fields=["meta"])

    def _annotate(self, hits: list[dict[str, Any]]) -> None:
        ensure_default_labels()
        label = AnnotationLabel.objects.get(name=BLACKLIST_LABEL)
        TurnAnnotation.objects.bulk_create([
            TurnAnnotation(trajectory=self.trajectory, turn_index=h["turn"], label=label,
                           note=f"{h['url']} (the blacklist monitor)")
            for h in hits
        ])


def _write(rows: list[Turn]) -> None:
    """The turns and their trajectories' counters in one transaction: never one without the other."""
    added: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        added[row.trajectory_id][0] += 1
        added[row.trajectory_id][1] += row.token_count
    with transaction.atomic():
        Turn.objects.bulk_create(rows)
        for pk, (turns, tokens) in added.items():
            Trajectory.objects.filter(pk=pk).update(turn_count=F("turn_count") + turns,
                                                    total_tokens=F("total_tokens") + tokens)


@dataclass
class _Pending:
    row: Turn
    done: bool = False
    error: BaseException | None = None


@dataclass
class _GroupCommit:
    """Group commit, as databases do for their log: the turns that threads add while a commit is
    under way are written together by the next committer, one transaction for all of them.

    A pool of 32 sessions adding a turn each costs one commit instead of 32 that queue for the
    write lock (SQLite's busy wait sleeps up to 100 ms a try; PostgreSQL flushes its log per
    commit). ``commit`` returns once the row is stored, or raises its own error: a batch that
    fails is written again row by row, so one bad turn (a repeated index) fails only its session.
    """

    _cond: threading.Condition = field(default_factory=threading.Condition)
    _queue: list[_Pending] = field(default_factory=list)
    _writing: bool = False

    def commit(self, row: Turn) -> None:
        mine = _Pending(row)
        with self._cond:
            self._queue.append(mine)
            while not mine.done and self._writing:
                self._cond.wait()
            if not mine.done:  # nobody is writing: this thread writes everything queued
                batch, self._queue, self._writing = self._queue, [], True
        if not mine.done:
            try:
                self._write_batch(batch)
            finally:
                with self._cond:
                    self._writing = False
                    for pending in batch:
                        pending.done = True
                    self._cond.notify_all()
        if mine.error is not None:
            raise mine.error

    @staticmethod
    def _write_batch(batch: list[_Pending]) -> None:
        try:
            _write([p.row for p in batch])
            return
        except BaseException as exc:  # noqa: BLE001 - told to the rows' own threads below
            if len(batch) == 1:
                batch[0].error = exc
                return
        for pending in batch:  # find the row that failed: each on its own
            pending.row.pk = None
            try:
                _write([pending.row])
            except BaseException as exc:  # noqa: BLE001 - that row's thread raises it
                pending.error = exc


_turns = _GroupCommit()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
