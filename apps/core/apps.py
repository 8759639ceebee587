from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"
    verbose_name = "KLong Studio core"

    def ready(self) -> None:
        from apps.core.datadir import prepare_data_folder

        # Before anything signs a cookie or opens the SQLite file in it.
        prepare_data_folder()
        from django.contrib import admin

        from apps.core import login, sockets
        from apps.core.roles import ensure_roles

        # After every migrate (and after each test-database flush) the role groups exist.
        post_migrate.connect(ensure_roles, sender=self, dispatch_uid="klong-ensure-roles")
        # The login limit (apps/core/login.py, its receivers connected by the import) also guards
        # the admin's login page, which says when the limit refused it.
        admin.site.login_form = login.RateLimitedAdminAuthenticationForm
        # Open WebSockets close when their session ends or their user's access changes.
        sockets.connect_access_signals()
