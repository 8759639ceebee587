"""Build the default sandbox image from this host's tools (no registry needed)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from worker.sandbox import SandboxError, docker_client
from worker.sandbox.image import ensure_image


class Command(BaseCommand):
    help = ("Import a sandbox image built from this machine's shell, coreutils, git and python3 into the Docker "
            "(or podman) engine at DOCKER_HOST; tag: KLONG_SANDBOX_IMAGE.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tag", default=settings.KLONG_SANDBOX_IMAGE)
        parser.add_argument("--rebuild", action="store_true", help="Build again even if the tag exists.")
        parser.add_argument("--docker-host", default="", help="Default: $DOCKER_HOST.")

    def handle(self, *args, **options) -> None:
        try:
            client = docker_client(options["docker_host"], timeout=600)
        except SandboxError as exc:
            raise CommandError(str(exc)) from None
        try:
            tag = ensure_image(client, options["tag"], rebuild=options["rebuild"])
        finally:
            client.close()
        self.stdout.write(self.style.SUCCESS(f"sandbox image ready: {tag}"))
