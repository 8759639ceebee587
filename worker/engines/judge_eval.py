"""The "judge_eval" job: a judge over a human-graded tree, reported as PaperBench's JudgeEval metrics."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from apps.jobs.models import Job
from apps.jobs.progress import Progress
from apps.judging.judge.grader import JudgeSettings, LeafResult
from apps.judging.judge.metrics import evaluate_judge
from apps.judging.judge.prompts import PaperContext
from apps.judging.judge.submission import Submission
from apps.judging.llm.client import make_client
from apps.judging.models import ModelEndpoint
from apps.judging.services import judge_eval_tree_path, submission_folder
from apps.papers.models import Paper
from apps.rubrics.paperbench import load_json_bytes


def run(job: Job, progress: Progress) -> dict[str, Any]:
    config = job.config
    tree_path = judge_eval_tree_path(config["graded_tree"])
    expected = load_json_bytes(tree_path.read_bytes())
    endpoint = ModelEndpoint.objects.get(name=config["endpoint"])
    if config.get("paper"):
        paper = Paper.objects.get(pk=config["paper"])
        context = PaperContext(paper.title, paper.markdown, paper.addendum, paper.judge_addendum)
    else:
        context = PaperContext(tree_path.stem, "(the paper is not available to this judge run)")

    def on_result(result: LeafResult, done: int, total: int) -> None:
        progress.update(done / total, f"{done}/{total} leaves judged", step=done, force=done == total)

    client = make_client(endpoint.to_config())
    try:
        with tempfile.TemporaryDirectory() as empty:
            folder = submission_folder(config["submission"]) if config.get("submission") else Path(empty)
            report = evaluate_judge(expected, client, context, Submission(folder),
                                    JudgeSettings(code_only=bool(config.get("code_only"))), on_result=on_result)
    finally:
        client.close()
    judged = report.pop("judged_tree")
    out = tree_path.with_name(f"{tree_path.stem}.job{job.pk}.judged.json")
    out.write_text(json.dumps(judged))
    progress.artifact("judged tree", str(out.relative_to(tree_path.parents[1])), kind="report")
    return report
