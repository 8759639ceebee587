from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.papers.services import BundleError, find_bundles, import_paper
from apps.rubrics.services.errors import RubricRefused


class Command(BaseCommand):
    help = (
        "Import PaperBench papers: a paper folder, a bare rubric.json, a folder of paper folders, "
        "or a flat folder of <paper>.rubric.json files. Prints one line per paper: id and node count."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--slug", help="Paper id to use (only when PATH holds one paper).")

    def handle(self, *args, path: Path, slug: str | None = None, **options) -> None:
        try:
            bundles = find_bundles(path)
        except BundleError as exc:
            raise CommandError(str(exc)) from None
        if slug and len(bundles) != 1:
            raise CommandError("--slug needs a PATH with exactly one paper")
        failed = 0
        # Each paper is its own transaction: one bad file does not undo the others.
        for bundle in bundles:
            try:
                result = import_paper(bundle, slug=slug)
            except (RubricRefused, BundleError) as exc:
                failed += 1
                self.stderr.write(f"{bundle.source}: refused: {getattr(exc, 'message', exc)}")
                for problem in getattr(exc, "problems", []):
                    self.stderr.write(f"  {problem.level}: {problem.path}: {problem.message}")
                continue
            state = "created" if result.created else ("new version" if result.version else "unchanged")
            self.stdout.write(f"{result.paper.slug}\t{result.node_count} nodes\t{state}")
            for warning in result.warnings:
                self.stdout.write(f"  warning: {warning.path}: {warning.message}")
        if failed:
            raise CommandError(f"{failed} of {len(bundles)} papers were refused")
