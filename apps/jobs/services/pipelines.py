"""Pipelines: several jobs as one, each stage an ordinary job queued when the previous one succeeds."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.jobs.models import Job
from apps.jobs.progress import publish, set_state
from apps.jobs.registry import KINDS
from apps.jobs.services.launching import JobConfigError, launch_job, validate_config

PIPELINE = "pipeline"


@transaction.atomic
def launch_pipeline(stages: list[dict[str, Any]], user, *, title: str = "", priority: int = 5) -> Job:
    """Launch stages (``[{"kind": ..., "config": {...}}, ...]``) as one job that runs them in order.

    Every stage's config is checked before anything is queued. The parent holds no worker: each
    stage is an ordinary job, and the next one is queued when the previous one succeeds.
    """
    if not isinstance(stages, list) or not stages:
        raise ValidationError({"stages": "A pipeline needs a non-empty list of stages."})
    checked = []
    for number, stage in enumerate(stages, start=1):
        if not isinstance(stage, dict) or "kind" not in stage:
            raise ValidationError({"stages": f"Stage {number} must be an object with a kind."})
        try:
            config = validate_config(stage["kind"], stage.get("config", {}))
        except JobConfigError as exc:
            raise JobConfigError({f"stage {number}.{k}": v for k, v in exc.errors.items()}) from None
        checked.append({"kind": stage["kind"], "config": config})
    parent = Job.objects.create(
        kind=PIPELINE,
        title=title or " → ".join(KINDS[s["kind"]].label for s in checked),
        state=Job.State.RUNNING,
        config={"stages": checked},
        queue="",
        priority=priority,
        total_steps=len(checked),
        stage=f"stage 1 of {len(checked)}",
        started_at=timezone.now(),
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    _launch_stage(parent, 0)
    return parent


def _launch_stage(parent: Job, index: int) -> Job:
    stage = parent.config["stages"][index]
    return launch_job(
        stage["kind"], stage["config"], parent.created_by, priority=parent.priority, parent=parent,
        title=f"{parent.title}: stage {index + 1}",
    )


def advance_pipeline(child: Job) -> None:
    """Called when a stage reaches a final state: queue the next stage or finish the pipeline."""
    parent = child.parent
    if parent is None or parent.kind != PIPELINE or parent.is_finished:
        return
    stages = parent.config["stages"]
    done = parent.children.filter(state=Job.State.SUCCEEDED).count()
    if child.state != Job.State.SUCCEEDED:
        state = Job.State.CANCELLED if child.state == Job.State.CANCELLED else Job.State.FAILED
        reason = f"Stage {done + 1} ({child.kind}, job #{child.pk}) {child.state}: {child.error or child.message}"
        set_state(parent.pk, state, error=reason if state == Job.State.FAILED else "", message=reason[:500])
        return
    if done >= len(stages):
        set_state(parent.pk, Job.State.SUCCEEDED, step=done, message="all stages succeeded",
                  result={"stages": list(parent.children.order_by("pk").values_list("pk", flat=True))})
        return
    # Conditional on the step, so a redelivered final state can never queue a stage twice.
    if Job.objects.filter(pk=parent.pk, step=done - 1).update(
        step=done, progress=done / len(stages), stage=f"stage {done + 1} of {len(stages)}"
    ):
        publish(parent.pk, {"kind": "progress", "progress": done / len(stages), "step": done,
                            "message": f"stage {done + 1} of {len(stages)}"})
        _launch_stage(parent, done)
