from __future__ import annotations

from django.apps import AppConfig


class WorkerConfig(AppConfig):
    """worker/ as a Django app only for its management commands (build_sandbox_image): commands that
    need the worker's code live here, since apps/ never import worker/."""

    name = "worker"
    label = "worker"
    verbose_name = "KLong Studio worker"
