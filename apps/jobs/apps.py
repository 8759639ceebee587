from __future__ import annotations

from django.apps import AppConfig

from apps.jobs.registry import autodiscover


class JobsConfig(AppConfig):
    name = "apps.jobs"
    label = "jobs"

    def ready(self) -> None:
        # Every app's kinds.py declares its job kinds; they import forms and models, so not before now.
        autodiscover()
