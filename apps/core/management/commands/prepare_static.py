from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from apps.core import staticfiles


class Command(BaseCommand):
    help = (
        "Collect, fingerprint and compress the static files into STATIC_ROOT (collectstatic) when a source "
        "changed since the last time; instant otherwise. `make run` calls it before starting the server."
    )

    def handle(self, *args, **options) -> None:
        if staticfiles.prepare(verbosity=max(0, options["verbosity"] - 1)):
            self.stdout.write(f"Static files collected into {settings.STATIC_ROOT}.")
        elif options["verbosity"] > 1:
            self.stdout.write("Static files up to date.")
