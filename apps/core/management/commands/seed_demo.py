from __future__ import annotations

import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from apps.core.demo import demo_exists, seed_demo


class Command(BaseCommand):
    help = "Seed the demo data (papers, rubric trees, trajectories, judge runs, a finished job). Idempotent."

    def handle(self, *args, **options) -> None:
        if demo_exists():
            self.stdout.write("Demo data already present.")
            return
        start = time.perf_counter()
        admin = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
        seed_demo(admin)
        self.stdout.write(self.style.SUCCESS(f"Seeded the demo data in {time.perf_counter() - start:.1f} s."))
