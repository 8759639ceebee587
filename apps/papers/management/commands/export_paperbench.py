from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.papers.models import Paper
from apps.papers.services import write_folder
from apps.rubrics.services.errors import NodeNotFound


class Command(BaseCommand):
    help = "Write a paper back as a PaperBench folder OUT_DIR/<paper id>/ (rubric.json exactly as stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paper_id", help="The paper's id (slug) or database number.")
        parser.add_argument("out_dir", type=Path)
        parser.add_argument("--rubric-version", type=int, dest="version_number",
                            help="Export this saved version instead of the current draft.")

    def handle(self, *args, paper_id: str, out_dir: Path, version_number: int | None = None, **options) -> None:
        paper = Paper.objects.filter(slug=paper_id).first()
        if paper is None and paper_id.isdigit():
            paper = Paper.objects.filter(pk=int(paper_id)).first()
        if paper is None:
            raise CommandError(f"No paper {paper_id!r}")
        version = None
        if version_number is not None:
            version = paper.rubric_versions.filter(number=version_number).first()
            if version is None:
                raise CommandError(f"{paper.slug} has no version {version_number}")
        try:
            folder = write_folder(paper, out_dir, version)
        except NodeNotFound as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(str(folder))
