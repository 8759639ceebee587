from __future__ import annotations

import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from apps.core.demo import demo_exists, demo_model_folder, demo_model_registered, register_demo_model, seed_demo
from worker.training.tiny import build_tiny_model


class Command(BaseCommand):
    help = ("Seed the demo data (papers, rubric trees, trajectories, judge runs, finished jobs) and a tiny chat "
            "model built offline, registered as a checkpoint and as the local endpoint 'demo-tiny'. Idempotent.")

    def handle(self, *args, **options) -> None:
        admin = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
        if demo_exists():
            self.stdout.write("Demo data already present.")
        else:
            start = time.perf_counter()
            seed_demo(admin)
            self.stdout.write(self.style.SUCCESS(f"Seeded the demo data in {time.perf_counter() - start:.1f} s."))
        if not demo_model_registered():
            start = time.perf_counter()
            build_tiny_model(demo_model_folder())
            checkpoint = register_demo_model(admin)
            self.stdout.write(self.style.SUCCESS(
                f"Built the demo model (checkpoint #{checkpoint.pk}, endpoint 'demo-tiny') in "
                f"{time.perf_counter() - start:.1f} s."))
