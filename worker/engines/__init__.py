"""Job engines: one function per job kind, ``run(job, progress) -> result dict``.

Each kind is declared in its app's ``kinds.py`` (apps/jobs/registry.py) with the dotted path of its
engine here. Engines are plain functions so they can be called from a test, a management command or
the Celery task alike; the task only claims the job and records the outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils.module_loading import import_string

from apps.jobs.models import Job
from apps.jobs.progress import Progress
from apps.jobs.registry import get_kind

Engine = Callable[[Job, Progress], dict[str, Any]]


def engine_for(kind: str) -> Engine:
    """The engine of a kind, imported when a job of it first runs (engines load torch)."""
    return import_string(get_kind(kind).engine)
