"""Job configs checked by their kind's form, and jobs launched: the one place the page, the API
and other apps call."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from apps.core.domain import Invalid
from apps.jobs.models import Job
from apps.jobs.queues import gpu_queue
from apps.jobs.registry import KINDS, get_kind
from apps.jobs.services.dispatch import send_job_on_commit


class JobConfigError(Invalid, ValidationError):
    """A config that its kind's form refuses; ``errors`` maps each option to its messages.

    Still a ValidationError with one message per option, for the forms that show it; the API
    answers ``{"config": errors}``.
    """

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        lines = [f"{field}: {' '.join(messages)}" for field, messages in errors.items()]
        ValidationError.__init__(self, lines)
        # What Django's single-message errors carry, so wrapping this one in another works too.
        self.message, self.code, self.params = "; ".join(lines), None, None
        self.details, self.headers = {}, {}

    def body(self) -> dict[str, Any]:
        return {"config": self.errors}


def validate_config(kind_name: str, config: Any) -> dict[str, Any]:
    """Check a config against its kind's form; return it with defaults filled in.

    Errors name the option: ``JobConfigError({"steps": ["Ensure this value is ... 1000."]})``.
    """
    if kind_name not in KINDS:
        raise ValidationError({"kind": f"Unknown job kind {kind_name!r}; known: {', '.join(sorted(KINDS))}."})
    if not isinstance(config, dict):
        raise ValidationError({"config": "config must be a JSON object."})
    kind = KINDS[kind_name]
    form_class = kind.form
    if form_class is None:
        return config
    unknown = sorted(set(config) - set(form_class.base_fields))
    if unknown:
        raise JobConfigError({name: [f"Unknown option for {kind_name}."] for name in unknown})
    # Options left out take their defaults, as on the launch page.
    data = {**kind.initial(), **config}
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
    config = validate_config(kind, config)
    spec = get_kind(kind)
    if spec.priority_for is not None:
        priority = spec.priority_for(config)
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
    send_job_on_commit(job)
    return job
