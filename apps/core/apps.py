from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"
    verbose_name = "KLong Studio core"

    def ready(self) -> None:
        from apps.core.roles import ensure_roles

        # After every migrate (and after each test-database flush) the role groups exist.
        post_migrate.connect(ensure_roles, sender=self, dispatch_uid="klong-ensure-roles")
