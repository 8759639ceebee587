from __future__ import annotations

import json
import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.judging.judge.grader import JudgeSettings
from apps.judging.judge.metrics import evaluate_judge
from apps.judging.judge.prompts import PaperContext
from apps.judging.judge.submission import Submission, SubmissionError
from apps.judging.llm.client import make_client
from apps.judging.llm.config import EndpointConfigError
from apps.judging.models import ModelEndpoint
from apps.papers.models import Paper
from apps.rubrics.paperbench import RubricFormatError, load_json_bytes


class Command(BaseCommand):
    help = (
        "JudgeEval: grade a human-graded PaperBench tree with a model endpoint and print accuracy and macro "
        "precision/recall/F1 over leaves, overall and per category, as JSON (PaperBench's computation)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("graded_tree", type=Path, help="A judge_eval JSON file (human grades on every node).")
        parser.add_argument("--endpoint", required=True, help="Model endpoint name.")
        parser.add_argument("--submission", type=Path, help="The submission folder the humans graded (default: empty).")
        parser.add_argument("--paper", help="Paper slug: its Markdown and addenda go into the prompts.")
        parser.add_argument("--paper-md", type=Path, help="The paper as a Markdown file (instead of --paper).")
        parser.add_argument("--code-only", action="store_true", help="Grade Code Development leaves only.")
        parser.add_argument("--output", type=Path, help="Also write the judge's graded tree here.")

    def handle(self, *args, graded_tree: Path, endpoint: str, submission: Path | None = None, paper: str | None = None,
               paper_md: Path | None = None, code_only: bool = False, output: Path | None = None, **options) -> None:
        try:
            expected = load_json_bytes(graded_tree.read_bytes())
        except (OSError, RubricFormatError) as exc:
            raise CommandError(f"Cannot read {graded_tree}: {exc}") from None
        row = ModelEndpoint.objects.filter(name=endpoint).first()
        if row is None:
            raise CommandError(f"No model endpoint named {endpoint!r}.")
        context = self._paper(paper, paper_md, graded_tree)
        with tempfile.TemporaryDirectory() as empty:
            try:
                folder = Submission(submission or Path(empty))
            except SubmissionError as exc:
                raise CommandError(str(exc)) from None
            try:
                client = make_client(row.to_config())
                try:
                    report = evaluate_judge(expected, client, context, folder, JudgeSettings(code_only=code_only))
                finally:
                    client.close()
            except EndpointConfigError as exc:  # the endpoint breaks a rule (URL, key variable, params)
                raise CommandError(str(exc)) from None
        judged = report.pop("judged_tree")
        if output is not None:
            output.write_text(json.dumps(judged, indent=2))
        report["graded_tree"] = str(graded_tree)
        self.stdout.write(json.dumps(report, indent=2))

    def _paper(self, slug: str | None, markdown: Path | None, tree_path: Path) -> PaperContext:
        if slug:
            paper = Paper.objects.filter(slug=slug).first()
            if paper is None:
                raise CommandError(f"No paper {slug!r}.")
            return PaperContext(paper.title, paper.markdown, paper.addendum, paper.judge_addendum)
        text = markdown.read_text() if markdown else "(the paper is not available to this judge run)"
        return PaperContext(tree_path.stem, text)
