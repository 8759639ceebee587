from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"
    verbose_name = "KLong Studio core"

    def ready(self) -> None:
        from django.contrib import admin

        from apps.core import login  # noqa: F401  (connects the login limit's signal receivers)
        from apps.core.roles import ensure_roles

        # After every migrate (and after each test-database flush) the role groups exist.
        post_migrate.connect(ensure_roles, sender=self, dispatch_uid="klong-ensure-roles")
        # The admin's login page says when the login limit (apps/core/login.py) refused it.
        admin.site.login_form = login.RateLimitedAdminAuthenticationForm
