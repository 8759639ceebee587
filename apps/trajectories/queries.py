"""Read helpers shared by the pages and the API: list filters, the viewer's turn index,
text chunks and search. Reads only; writes live in services.py.
"""

from __future__ import annotations

import re
from typing import Any

from django.db.models import Q, QuerySet
from django.db.models.functions import Length

from apps.papers.markdown import render_markdown
from apps.trajectories.models import Trajectory, Turn
from apps.trajectories.monitor import blacklist_hits, normalise_url
from apps.trajectories.tokens import turn_text

SORTS = {
    "newest": "-created_at",
    "oldest": "created_at",
    "turns": "turn_count",
    "-turns": "-turn_count",
    "tokens": "total_tokens",
    "-tokens": "-total_tokens",
    "score": "final_score",
    "-score": "-final_score",
    "title": "title",
}

# Never shown in a list, and each can be megabytes: a run's meta (scores, errors) or a paper's text.
LIST_DEFERRED = ("meta", "paper__markdown", "paper__abstract", "paper__addendum", "paper__judge_addendum")


def trajectory_rows() -> QuerySet[Trajectory]:
    """Trajectories for a list (the page, the API), with their paper, large columns left unread."""
    return Trajectory.objects.select_related("paper").defer(*LIST_DEFERRED)


def filter_trajectories(queryset: QuerySet[Trajectory], values: dict[str, Any]) -> QuerySet[Trajectory]:
    """The list filters, shared by the page and the API."""
    if q := (values.get("q") or "").strip():
        queryset = queryset.filter(Q(title__icontains=q) | Q(task__icontains=q) | Q(source_name__icontains=q))
    if values.get("paper"):
        queryset = queryset.filter(paper=values["paper"])
    if values.get("source"):
        queryset = queryset.filter(source=values["source"])
    if model := (values.get("model") or "").strip():
        queryset = queryset.filter(model_name__icontains=model)
    if values.get("end_state"):
        queryset = queryset.filter(end_state=values["end_state"])
    review = values.get("review")
    if review == "none":
        queryset = queryset.filter(review="")
    elif review:
        queryset = queryset.filter(review=review)
    bounds = {
        "final_score__gte": values.get("score_min"), "final_score__lte": values.get("score_max"),
        "turn_count__gte": values.get("turns_min"), "turn_count__lte": values.get("turns_max"),
    }
    queryset = queryset.filter(**{k: v for k, v in bounds.items() if v is not None})
    return queryset.order_by(SORTS.get(values.get("sort") or "newest", "-created_at"), "-pk")


def _blacklisted_turns(trajectory: Trajectory) -> list[int]:
    """Turns the monitor flags: the database narrows to turns that mention a URL at all."""
    blacklist = list(trajectory.paper.blacklist) if trajectory.paper else []
    needles = [normalise_url(u) for u in blacklist if normalise_url(u)]
    if not needles:
        return []
    mention = Q()
    for needle in needles:
        mention |= Q(text__icontains=needle) | Q(tool_calls__icontains=needle)
    flagged = []
    for index, text, reasoning, calls in trajectory.turns.filter(mention).values_list(
        "index", "text", "reasoning", "tool_calls"
    ):
        if blacklist_hits(turn_text(text, reasoning, calls), blacklist):
            flagged.append(index)
    return flagged


def turn_index_data(trajectory: Trajectory) -> dict[str, Any]:
    """What the viewer needs before any text: one column per field, a few bytes per turn."""
    rows = trajectory.turns.order_by("index").values_list(
        "role", "token_count", Length("text"), Length("reasoning"), "tool_calls", "no_loss"
    )
    data: dict[str, Any] = {"role": [], "tokens": [], "chars": [], "calls": [], "no_loss": []}
    for role, tokens, chars, reasoning_chars, calls, no_loss in rows:
        data["role"].append(role[0])  # s, u, a, t
        data["tokens"].append(tokens)
        data["chars"].append(chars + reasoning_chars)
        data["calls"].append(",".join(str(c.get("name", "")) for c in calls) if calls else "")
        data["no_loss"].append(1 if no_loss else 0)
    data["flagged"] = _blacklisted_turns(trajectory)
    # Per annotated turn: [label, note, author, date] rows, shown as badges with a tooltip.
    annotations: dict[int, list[list[str]]] = {}
    rows = trajectory.annotations.values_list("turn_index", "label__name", "note", "author__username", "created_at")
    for index, label, note, author, created in rows:
        annotations.setdefault(index, []).append([label, note, author or "", created.date().isoformat()])
    data["annotations"] = annotations
    return data


# Messages the agent or its user wrote are often Markdown; tool output is shown as it came.
MARKDOWN_ROLES = {"system", "user", "assistant"}
MARKDOWN_MAX_CHARS = 50_000
# Text with none of Markdown's marks is shown as it is: rendering it would only cost time.
_MARKDOWN_MARKS = re.compile(r"[*_`#\[|>]|^\s*(?:[-+]|\d+\.)\s", re.MULTILINE)


def turn_html(role: str, text: str) -> str:
    """Sanitised HTML of a turn's Markdown ('' where the viewer shows the text as it is)."""

    if role not in MARKDOWN_ROLES or not text or len(text) > MARKDOWN_MAX_CHARS or not _MARKDOWN_MARKS.search(text):
        return ""
    return render_markdown(text, raw_html=False)


def turn_texts(trajectory: Trajectory, start: int, end: int) -> list[dict[str, Any]]:
    """Turns start..end-1 with their text (and its sanitised Markdown), for the viewer's chunks."""
    rows = Turn.objects.filter(trajectory=trajectory, index__gte=start, index__lt=end).order_by("index")
    return [
        {"i": t.index, "role": t.role, "text": t.text, "html": turn_html(t.role, t.text), "reasoning": t.reasoning,
         "calls": t.tool_calls, "call_id": t.tool_call_id, "ts": t.timestamp.isoformat() if t.timestamp else None,
         "source_role": t.source_role if t.source_role != t.role else ""}
        for t in rows
    ]


def search_turns(trajectory: Trajectory, q: str) -> list[int]:
    q = q.strip()
    if not q:
        return []
    return list(
        trajectory.turns.filter(
            Q(text__icontains=q) | Q(reasoning__icontains=q) | Q(tool_calls__icontains=q)
        ).order_by("index").values_list("index", flat=True)[:5000]
    )
