"""Launching, cancelling and retrying jobs: the one place the page, the API and other apps call."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.jobs.models import Job
from worker.engines import KINDS, JobKind
from worker.progress import publish, set_state
from worker.queues import gpu_queue


class JobConfigError(ValidationError):
    """A config that its kind's form refuses; ``errors`` maps each option to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        super().__init__([f"{field}: {' '.join(messages)}" for field, messages in errors.items()])


def config_form_class(kind: JobKind) -> type[forms.Form] | None:
    if not kind.form:
        return None
    module_name, _, name = kind.form.rpartition(".")
    return getattr(import_module(module_name), name)


def config_initial(kind: JobKind) -> dict[str, Any]:
    """The defaults a launch form starts from."""
    form_class = config_form_class(kind)
    if form_class is None:
        return {}
    return {name: field.initial for name, field in form_class.base_fields.items() if field.initial is not None}


def validate_config(kind_name: str, config: Any) -> dict[str, Any]:
    """Check a config against its kind's form; return it with defaults filled in.

    Errors name the option: ``JobConfigError({"steps": ["Ensure this value is ... 1000."]})``.
    """
    if kind_name not in KINDS:
        raise ValidationError({"kind": f"Unknown job kind {kind_name!r}; known: {', '.join(sorted(KINDS))}."})
    if not isinstance(config, dict):
        raise ValidationError({"config": "config must be a JSON object."})
    form_class = config_form_class(KINDS[kind_name])
    if form_class is None:
        return config
    unknown = sorted(set(config) - set(form_class.base_fields))
    if unknown:
        raise JobConfigError({name: [f"Unknown option for {kind_name}."] for name in unknown})
    # Options left out take their defaults, as on the launch page.
    data = {**config_initial(KINDS[kind_name]), **config}
    form = form_class(data=data)
    if not form.is_valid():
        raise JobConfigError({field: list(errors) for field, errors in form.errors.items()})
    return {name: value for name, value in form.cleaned_data.items() if value is not None}


@transaction.atomic
def launch_job(
    kind: str,
    config: Any,
    user,
    *,
    title: str = "",
    priority: int = 5,
    parent: Job | None = None,
    time_limit_s: int | None = None,
) -> Job:
    """Validate, create the job row and queue its task once the row is committed."""
    from worker.tasks import run_job

    config = validate_config(kind, config)
    spec = KINDS[kind]
    if spec.priority_for:
        module_name, _, name = spec.priority_for.rpartition(".")
        priority = getattr(import_module(module_name), name)(config)
    if not 0 <= priority <= 9:
        raise ValidationError({"priority": "priority must be between 0 (first) and 9 (last)."})
    # A kind whose form asks how many GPUs (SFT, RL, agent runs) overrides the kind's own count.
    gpus = int(config.get("gpus", spec.gpus) or 0)
    queue = gpu_queue(gpus) if spec.routed_by_gpus else spec.queue
    job = Job.objects.create(
        kind=kind,
        title=title or spec.label,
        config=config,
        config_version=spec.config_version,
        queue=queue,
        gpus=gpus,
        priority=priority,
        parent=parent,
        time_limit_s=time_limit_s or spec.time_limit_s,
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    run_job.apply_async_on_commit(args=(job.pk,), **task_options(job))
    return job


def task_options(job: Job) -> dict[str, Any]:
    options: dict[str, Any] = {"queue": job.queue, "priority": job.priority}
    if job.time_limit_s:
        # The hard limit a little later, so the soft one gets to record the reason first.
        options.update(soft_time_limit=job.time_limit_s, time_limit=job.time_limit_s + 30)
    return options


def cancel_job(job: Job) -> Job:
    """Queued jobs stop at once; running ones are asked to stop at their next progress report, and
    one whose worker died (an orphan) is cancelled on the spot.

    A pipeline stops its current stage; the stage's end then ends the pipeline as cancelled.
    """
    if job.kind == PIPELINE:
        current = job.children.exclude(state__in=Job.FINISHED).first()
        if current is not None:
            cancel_job(current)
            current.refresh_from_db()
            if current.state == Job.State.CANCELLED:
                advance_pipeline(current)
        elif not job.is_finished:
            set_state(job.pk, Job.State.CANCELLED, message="cancelled by user")
        job.refresh_from_db()
        return job
    if Job.objects.filter(pk=job.pk, state=Job.State.QUEUED).update(state=Job.State.CANCELLED) == 1:
        set_state(job.pk, Job.State.CANCELLED, message="cancelled before it started")
    elif Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(state=Job.State.CANCELLING) == 1:
        publish(job.pk, {"kind": "state", "state": Job.State.CANCELLING})
    else:
        job.refresh_from_db()
        if job.is_finished:
            raise ValidationError(f"Job {job.pk} has already finished ({job.state}).")
    job.refresh_from_db()
    if job.state == Job.State.CANCELLING and (why := orphaned_because(job)):
        from worker.lifecycle import release_orphan

        # Nobody is left to stop it at a progress report.
        release_orphan(job, why)
        job.refresh_from_db()
    return job


def orphaned_because(job: Job) -> str:
    """Why the worker process running ``job`` is known to be gone; "" if it may be alive or Redis is away."""
    from worker.lifecycle import live_beats, orphan_reason, stale_before

    if job.state not in (Job.State.RUNNING, Job.State.CANCELLING):
        return ""
    try:
        return orphan_reason(job, live_beats(), stale_before())
    except Exception:  # without the heartbeats nothing is known: the workers' own look decides
        return ""


def retry_job(job: Job, user) -> Job:
    """Run a failed or cancelled job again, from its last checkpoint, keeping its history; also a
    running one whose worker died (an orphan), without waiting for a worker to notice."""
    from worker.tasks import run_job

    if job.kind == PIPELINE:
        raise ValidationError("A pipeline is not retried as a whole: launch it again, or retry its failed stage.")
    job.refresh_from_db()
    # Before the transaction: the heartbeats are read from Redis.
    orphan = bool(orphaned_because(job))
    with transaction.atomic():
        if orphan:
            # Conditional on the attempt: a worker releasing the same orphan cannot queue it twice.
            retryable = Job.objects.filter(pk=job.pk, state=job.state, attempt=job.attempt)
        else:
            retryable = Job.objects.filter(pk=job.pk, state__in=[Job.State.FAILED, Job.State.CANCELLED])
        retried = retryable.update(
            state=Job.State.QUEUED, error="", finished_at=None, message=f"retried by {user.get_username()}"
        )
        job.refresh_from_db()
        if not retried:
            running = job.state in (Job.State.RUNNING, Job.State.CANCELLING)
            where = f" on {job.worker}, which is not known to have died" if running and job.worker else ""
            raise ValidationError(
                f"Only failed or cancelled jobs can be retried, or running ones whose worker has died; "
                f"job {job.pk} is {job.state}{where}."
            )
        run_job.apply_async_on_commit(args=(job.pk,), **task_options(job))
        transaction.on_commit(lambda: publish(job.pk, {"kind": "state", "state": Job.State.QUEUED}))
    return job


def eta_seconds(job: Job) -> float | None:
    """Time left at the pace so far; None before there is a pace to go by."""
    if job.state != Job.State.RUNNING or not job.started_at or not 0 < job.progress < 1:
        return None
    elapsed = (timezone.now() - job.started_at).total_seconds()
    return elapsed * (1 - job.progress) / job.progress


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
