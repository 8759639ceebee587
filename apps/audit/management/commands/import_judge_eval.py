from __future__ import annotations

import json
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.services.judge_eval_import import import_judge_eval
from apps.papers.models import Paper


class Command(BaseCommand):
    help = (
        "Import a PaperBench human-graded tree (judge_eval JSON) as a human grading of a paper: leaves matched "
        "to the paper's latest rubric version by id, then by requirement text. Prints the match as JSON."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paper", help="Paper slug.")
        parser.add_argument("graded_tree", type=Path, help="A judge_eval JSON file.")

    def handle(self, *args, paper: str, graded_tree: Path, **options) -> None:
        row = Paper.objects.filter(slug=paper).first()
        if row is None:
            raise CommandError(f"No paper {paper!r}.")
        try:
            data = graded_tree.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {graded_tree}: {exc}") from None
        try:
            result = import_judge_eval(paper=row, data=data, filename=graded_tree.name, user=None)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(json.dumps({"run": result.run.pk, "rubric_version": result.version.number,
                                      "created_version": result.created_version, "score": result.run.score,
                                      "match": result.match, "unmatched": result.unmatched}, indent=2))
