"""Trajectory exports, sized for 1,000-turn runs by the thousand.

The training dataset renders every window with the tokenizer (seconds per 1,000-turn run): a
request checks what it can at once and queues a ``dataset_export`` job, whose zip the job page
offers for download (worker/engines/dataset_export.py writes it with ``split_service.write_dataset``).
Annotations cost little per row, so they stream as JSON lines in batches: memory stays at one batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Min, Q
from django.http import StreamingHttpResponse

from apps.core.domain import TooMany
from apps.core.downloads import text_download
from apps.core.roles import perm
from apps.jobs.models import Job, ModelCheckpoint
from apps.jobs.services.launching import launch_job
from apps.trajectories.models import TurnAnnotation
from apps.trajectories.split_service import (
    CONFIG_FIELDS,
    REASONING_OPTION,
    ExportError,
    SplitConfigError,
    config_from,
    export_renderer,
    export_selection,
    reasoning_choice,
)

DATASET_EXPORT = "dataset_export"
ANNOTATION_BATCH = 2000
ANNOTATION_COLUMNS = ("pk", "trajectory_id", "turn_index", "label__name", "note",
                      f"author__{get_user_model().USERNAME_FIELD}", "created_at")


class ExportLimit(TooMany, ExportError):
    """The user already has as many dataset exports queued or running as one may."""


def check_tokenizer_folder(base_model: str, user: Any) -> None:
    """Any model folder on the server is for those who may launch jobs (as SFT's base model); others
    choose among the checkpoints' folders and KLONG_TOKENIZER_PATH."""
    if not base_model.strip() or user.has_perm(perm("launch_jobs")):
        return
    known = {str(Path(settings.DATA_DIR) / path) for path in ModelCheckpoint.objects.values_list("path", flat=True)}
    if base_model.strip() not in known | {settings.KLONG_TOKENIZER_PATH}:
        raise ExportError("Choose one of the checkpoints' model folders (another folder on the server needs the "
                          "operator role).")


def dataset_export_config(params: Mapping[str, Any], user: Any) -> dict[str, Any]:
    """Check an export request, so that what can be known now is a 400 with the reason, not a failed
    job: the tokenizer and its chat format, the selection, the split options for each trajectory.
    Returns the job's config: the chosen ids in export order, the base model folder whose tokenizer
    renders the windows, the split options given and ``train_on_reasoning`` when given."""
    check_tokenizer_folder(str(params.get("base_model") or ""), user)
    tokenizer_path, _renderer = export_renderer(str(params.get("base_model") or ""))
    chosen = export_selection(params)
    options = {name: params[name] for name in CONFIG_FIELDS if params.get(name) not in (None, "")}
    for name, value in options.items():
        if not isinstance(value, (str, int, float, bool)):
            raise SplitConfigError(f"{name}: {value!r} is not a number")
    for trajectory in chosen:
        config_from(options, trajectory)
    reasoning = reasoning_choice(params)
    if reasoning is not None:
        options[REASONING_OPTION] = reasoning
    return {"ids": [t.pk for t in chosen], "base_model": tokenizer_path, **options}


def launch_dataset_export(params: Mapping[str, Any], user: Any) -> Job:
    """Queue a dataset export job of the trajectories ``params`` choose (ids or the list filters)."""
    config = dataset_export_config(params, user)
    count = len(config["ids"])
    with transaction.atomic():
        _check_export_slots(user)
        return launch_job(DATASET_EXPORT, config, user,
                          title=f"Dataset export: {count} trajector{'y' if count == 1 else 'ies'}")


def _check_export_slots(user: Any) -> None:
    limit = settings.KLONG_EXPORT_JOBS_PER_USER
    if not limit:
        return
    # The user's row lock makes two requests at once count each other's job.
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    waiting = Job.objects.filter(kind=DATASET_EXPORT, created_by=user).exclude(state__in=Job.FINISHED).count()
    if waiting >= limit:
        raise ExportLimit(f"You already have {waiting} dataset exports queued or running; {limit} at once is the "
                          "limit (KLONG_EXPORT_JOBS_PER_USER). Wait for one to finish or cancel one, then try again.")


# ------------------------------------------------------------------ annotations


def annotation_filters(params: Mapping[str, Any]) -> Q:
    """``label`` (a name) and ``trajectory`` (an id); a bad id is an ExportError, before any byte is sent."""
    where = Q()
    if label := params.get("label"):
        where &= Q(label__name=label)
    if trajectory := params.get("trajectory"):
        if not str(trajectory).isdigit():
            raise ExportError(f"trajectory must be a trajectory id, not {str(trajectory)[:40]!r}.")
        where &= Q(trajectory_id=int(trajectory))
    return where


def annotations_jsonl(where: Q) -> StreamingHttpResponse:
    """The annotations as JSON lines, in trajectory and turn order, one batch of rows at a time."""
    matching = TurnAnnotation.objects.filter(where)

    def next_trajectory(after: int | None) -> int | None:
        rows = matching if after is None else matching.filter(trajectory_id__gt=after)
        return rows.aggregate(first=Min("trajectory_id"))["first"]

    def batch(after: tuple[int, int, int] | None) -> tuple[str, tuple[int, int, int] | None]:
        # Keyset per trajectory (its index narrows each query to one run's annotations), in turn
        # order, so no query scans and sorts every annotation again for each batch. Plain values:
        # building three model instances per row took most of the time.
        trajectory, turn, pk = after if after is not None else (next_trajectory(None), -1, 0)
        chunk: list[tuple[Any, ...]] = []
        while trajectory is not None and len(chunk) < ANNOTATION_BATCH:
            wanted = ANNOTATION_BATCH - len(chunk)
            rows = list(matching.filter(Q(turn_index__gt=turn) | Q(turn_index=turn, pk__gt=pk), trajectory_id=trajectory)
                        .order_by("turn_index", "pk").values_list(*ANNOTATION_COLUMNS)[:wanted])
            chunk += rows
            if len(rows) < wanted:  # this trajectory is done
                trajectory, turn, pk = next_trajectory(trajectory), -1, 0
        text = "".join(json.dumps({
            "trajectory": trajectory_id, "turn": turn_index, "label": label, "note": note, "author": author,
            "created_at": created_at.isoformat(),
        }) + "\n" for _pk, trajectory_id, turn_index, label, note, author, created_at in chunk)
        if trajectory is None:
            return text, None
        last = chunk[-1]
        return text, (last[1], last[2], last[0])

    return text_download(batch, "annotations.jsonl", "application/x-ndjson")
