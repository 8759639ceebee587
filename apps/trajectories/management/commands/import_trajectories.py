from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.papers.models import Paper
from apps.trajectories.services import (
    ImportedTrajectory,
    TrajectoryImportError,
    import_trajectories,
)


class Command(BaseCommand):
    help = (
        "Import agent trajectories from a file or a folder (every format the studio reads; "
        "detected per file). All or nothing unless --skip-bad."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="A trajectory file, or a folder read recursively.")
        parser.add_argument("--paper", help="Paper id or slug the trajectories belong to.")
        parser.add_argument(
            "--skip-bad", action="store_true", help="Skip bad records and list them instead of failing."
        )
        parser.add_argument("--format", help="Force a format instead of detecting it.")

    def handle(self, *args: Any, **options: Any) -> None:
        paper = None
        if options["paper"]:
            ref = options["paper"]
            paper = Paper.objects.filter(pk=int(ref)).first() if ref.isdigit() else None
            paper = paper or Paper.objects.filter(slug=ref).first()
            if paper is None:
                raise CommandError(f"no paper with id or slug {ref!r}")

        def report(imported: ImportedTrajectory) -> None:
            self.stdout.write(
                f"{imported.format}\tid {imported.id}\t{imported.turns} turns\t{imported.source_name}"
            )

        try:
            result = import_trajectories(
                options["path"], paper=paper, skip_bad=options["skip_bad"], format=options["format"],
                on_trajectory=report,
            )
        except TrajectoryImportError as exc:
            raise CommandError(f"nothing imported: {exc}") from exc
        for skipped in result.skipped:
            self.stderr.write(f"skipped {skipped}")
        if result.clipped:
            self.stderr.write(result.clip_note())
        counts = "estimated (chars/4)" if not result.tokenizer else f"tokenizer {result.tokenizer}"
        self.stdout.write(
            self.style.SUCCESS(
                f"{len(result.trajectories)} trajectories imported, {len(result.skipped)} skipped; "
                f"token counts: {counts}"
            )
        )
