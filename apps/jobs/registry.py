"""Job kinds: each is declared once, in the ``kinds`` module of the app it belongs to (its form,
engine, queue and GPU rule, priority rule, page partial), and found at start-up, as Label Studio
finds its actions. Adding a kind touches that app's ``kinds.py`` and one engine module in
worker/engines/.

The engine is named by its dotted path: the worker imports it when it runs a job (the web never
loads torch, and apps/ import nothing of worker/).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.utils.module_loading import autodiscover_modules


class UnknownKind(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.message = f"Unknown job kind {name!r}; known: {', '.join(sorted(KINDS))}."

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class JobKind:
    name: str
    label: str
    description: str
    engine: str  # dotted path to ``run(job, progress) -> result dict`` in worker/engines/
    queue: str = "cpu"
    # The Django form that validates the config (defaults, help text, errors); the launch page and
    # the API both use it. None: the engine checks its own config (kinds launched by code only).
    form: type[forms.Form] | None = None
    gpus: int = 0
    config_version: int = 1
    # Seconds before the task is asked to stop (SoftTimeLimitExceeded -> a failed job with that
    # reason); None: the worker-wide CELERY_TASK_SOFT_TIME_LIMIT.
    time_limit_s: int | None = None
    # ``f(config) -> priority`` that overrides the launcher's choice, for kinds whose order is a rule
    # (judging: eval papers before train papers), whoever launches them.
    priority_for: Callable[[Mapping[str, Any]], int] | None = None
    # The config's "gpus" (default ``gpus``) picks the queue instead of ``queue``: cpu for 0, else
    # the queue of jobs needing that many GPUs (apps/jobs/queues.py).
    routed_by_gpus: bool = False
    # The engine opens sandboxes: when its task ends, any container it left behind is removed
    # (worker/sandbox/signals.py).
    uses_sandboxes: bool = False
    # What the job page adds for this kind: a template included below the progress, its context
    # (``f(job) -> dict``), and static scripts.
    partial: str = ""
    partial_context: Callable[[Any], dict[str, Any]] | None = None
    scripts: tuple[str, ...] = field(default_factory=tuple)

    def initial(self) -> dict[str, Any]:
        """The defaults a launch form starts from."""
        if self.form is None:
            return {}
        return {name: f.initial for name, f in self.form.base_fields.items() if f.initial is not None}


KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    if kind.name in KINDS and KINDS[kind.name] != kind:
        raise ValueError(f"job kind {kind.name!r} is declared twice")
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> JobKind:
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKind(name) from None


def autodiscover() -> None:
    """Import every installed app's ``kinds`` module (apps/jobs/apps.py calls it once models are loaded)."""
    autodiscover_modules("kinds")
