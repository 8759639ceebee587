"""The "rubric_draft" job: a model drafts a PaperBench rubric tree from a paper's Markdown.

Each attempt's answer is validated; refused trees go back to the model with the validator's
problems, up to ``max_attempts``. A valid tree is saved by ``apps.papers.rubric_drafts`` (the
draft and a model-draft version, or, when the paper already has a curated rubric, only a file
beside the job). No valid tree after every attempt: the job fails with the last problems.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

from apps.jobs.models import Job
from apps.jobs.progress import Progress
from apps.judging.llm.client import make_client
from apps.judging.models import ModelEndpoint
from apps.papers.models import Paper
from apps.papers.rubric_drafts import save_model_draft
from worker.factory.rubric_draft import (
    DraftRequest,
    build_messages,
    feedback,
    read_answer,
    read_code_folder,
    tree_summary,
)


class DraftRefused(RuntimeError):
    """No attempt produced a valid tree."""


def run(job: Job, progress: Progress) -> dict[str, Any]:
    config = job.config
    paper = Paper.objects.get(slug=config["paper"])
    endpoint = ModelEndpoint.objects.get(name=config["endpoint"])
    endpoint_config = endpoint.to_config()
    code_files: tuple[tuple[str, str], ...] = ()
    if config.get("code_folder"):
        code_files = read_code_folder(settings.DATA_DIR / config["code_folder"])
        progress.log(f"Official code: {len(code_files)} files from {config['code_folder']}")
    request = DraftRequest(paper.title, paper.markdown, code_files, int(config.get("target_leaves", 30)))
    messages = build_messages(request)
    attempts = int(config.get("max_attempts", 3))
    params: dict[str, Any] = {}
    if config.get("temperature") is not None:
        params["temperature"] = float(config["temperature"])
    cost = 0.0
    tokens = 0
    problems: list[str] = []
    client = make_client(endpoint_config)
    try:
        for attempt in range(1, attempts + 1):
            progress.update((attempt - 1) / attempts, f"attempt {attempt} of {attempts}", step=attempt, force=True)
            answer = client.chat(messages, **params)
            cost += answer.record.cost_usd
            tokens += answer.record.prompt_tokens + answer.record.completion_tokens
            outcome = read_answer(answer.text)
            progress.metric(attempt, cost_usd=cost, problems=len(outcome.problems))
            if outcome.ok:
                break
            problems = outcome.problems
            progress.log(f"attempt {attempt}: the tree was refused ({len(problems)} problems; first: {problems[0]})",
                         level="warning")
            messages = [*messages, {"role": "assistant", "content": answer.text},
                        {"role": "user", "content": feedback(problems)}]
        else:
            raise DraftRefused(
                f"the model gave no valid rubric tree in {attempts} attempt{'s' if attempts != 1 else ''}; last "
                f"problems: {'; '.join(problems[:5])}" + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
            )
    finally:
        close = getattr(client, "close", None)
        if close:
            close()
    tree = outcome.tree
    assert tree is not None  # the loop only breaks on a valid tree
    folder = settings.DATA_DIR / "rubric_drafts"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"job-{job.pk}-{paper.slug}.rubric.json"
    path.write_text(json.dumps(tree, indent=4))
    progress.artifact("rubric.json", str(path.relative_to(settings.DATA_DIR)), kind="report", paper=paper.slug)
    saved = save_model_draft(paper, tree, f"by {endpoint.name} ({endpoint_config.model}) in job #{job.pk}")
    progress.log(f"Rubric {'saved as version ' + str(saved.version) if saved.applied else saved.reason}")
    summary = tree_summary(tree)
    return {
        "paper": paper.slug, **saved.as_dict(), "attempts": attempt, "leaves": summary["leaves"],
        "nodes": summary["nodes"], "categories": summary["categories"], "warnings": len(outcome.warnings),
        "cost_usd": round(cost, 6), "tokens": tokens, "file": str(path.relative_to(settings.DATA_DIR)),
    }
