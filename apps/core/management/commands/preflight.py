from __future__ import annotations

import sys

from django.conf import settings
from django.core.management.base import BaseCommand

from apps.core import health


class Command(BaseCommand):
    help = "Check that the database (and an external Redis, if REDIS_URL is set) answer; exit 1 with a clear message if not."

    def handle(self, *args, **options) -> None:
        checks = [health.check_database()]
        if not settings.EMBEDDED_REDIS:
            checks.append(health.check_redis())
        failed = [c for c in checks if not c.ok]
        for check in failed:
            hint = "DATABASE_URL" if check.name == "database" else "REDIS_URL"
            label = health.database_label() if check.name == "database" else health.redis_label()
            self.stderr.write(f"Cannot reach the {check.name} ({label}): {check.detail}\nCheck {hint}, or unset it to use the embedded default.")
        if failed:
            sys.exit(1)
        self.stdout.write("Services reachable: " + "; ".join(c.detail for c in checks))
