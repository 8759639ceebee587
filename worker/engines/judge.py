"""The "judge" job: grade a submission against a paper's rubric version with a model endpoint."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.jobs.models import Job
from apps.jobs.progress import JobCancelled, Progress
from apps.judging.judge.grader import JudgeSettings, LeafCheck, LeafResult, grade_tree
from apps.judging.judge.prompts import PaperContext
from apps.judging.judge.submission import Submission
from apps.judging.llm.client import make_client
from apps.judging.models import ModelEndpoint, RubricCheck
from apps.judging.services import save_judge_run, submission_folder
from apps.papers.models import Paper
from apps.rubrics.models import RubricVersion
from apps.rubrics.paperbench import flatten, leaf_mask
from worker.engines.agent_run import CancelWatch
from worker.judge.checks import run_check
from worker.sandbox import SandboxError, SandboxSpec
from worker.sandbox.reproduce import Reproduction, reproduce


def reproduce_step(job: Job, folder: Path, progress: Progress) -> Reproduction:
    """Run the submission's reproduce.sh in a fresh sandbox (the judge form's reproduce_* options);
    the reproduced folder lies next to the submission, ``<name>-reproduced-job<id>``."""
    config = job.config
    spec = SandboxSpec(backend=config.get("reproduce_backend", "auto"), image=config.get("reproduce_image", ""),
                       cpus=2.0, memory_mb=int(config.get("reproduce_memory_mb", 8192)),
                       gpus=int(config.get("reproduce_gpus", 0)), network=bool(config.get("reproduce_network")),
                       job_id=job.pk)
    dest = folder.parent / f"{folder.name}-reproduced-job{job.pk}"
    shutil.rmtree(dest, ignore_errors=True)  # a retried job's own earlier attempt
    timeout = float(config.get("reproduce_timeout", 3600))
    progress.log(f"reproducing: reproduce.sh in a fresh {spec.backend} sandbox, timeout {timeout:g} s"
                 f"{f', {spec.gpus} GPU(s)' if spec.gpus else ''}{', with network' if spec.network else ''}")
    with CancelWatch(job.pk) as watch:

        def watched(box: Any) -> None:
            watch.sandbox = box
            if watch.cancelled.is_set():  # cancelled while the sandbox opened
                box.close()

        try:
            done = reproduce(folder, dest, spec, timeout, on_open=watched)
        except SandboxError:
            if watch.cancelled.is_set():  # the watcher closed the sandbox: reproduce.sh was killed
                raise JobCancelled() from None
            raise
    if done.timed_out:
        progress.log(f"reproduce.sh ran past the timeout of {timeout:g} s and was killed", level="warning")
    else:
        progress.log(f"reproduce.sh {'exited with code ' + str(done.exit_code) if done.script_found else 'is missing'}"
                     f" after {done.duration_s:.1f} s")
    return done


def leaf_checks(paper: Paper, nodes: list) -> dict[int, LeafCheck]:
    """The paper's programmatic checks, by leaf index (a repeated id gets the check on each leaf)."""
    by_id = {c.node_id: LeafCheck(c.command, c.timeout_s) for c in RubricCheck.objects.filter(paper=paper)}
    is_leaf = leaf_mask(nodes)
    return {n.index: by_id[str(n.node_id)] for n in nodes if is_leaf[n.index] and str(n.node_id) in by_id}


def run(job: Job, progress: Progress) -> dict[str, Any]:
    config = job.config
    paper = Paper.objects.get(pk=config["paper"])
    if config.get("rubric_version"):
        version = RubricVersion.objects.get(pk=config["rubric_version"], paper=paper)
    else:
        version = paper.rubric_versions.order_by("-number").first()
        if version is None:
            raise ValueError(f"paper {paper.slug} has no rubric version")
    endpoint = ModelEndpoint.objects.get(name=config["endpoint"])
    endpoint_config = endpoint.to_config()  # snapshot now: later edits to the endpoint do not change this run
    folder = submission_folder(config["submission"])
    reproduced = reproduce_step(job, folder, progress) if config.get("reproduce") else None
    started_at = reproduced.started_at if reproduced else config.get("reproduce_started_at")
    if reproduced is not None:
        folder = Path(reproduced.folder)  # the executed submission is what is graded
    nodes = flatten(version.tree)
    judge_settings = JudgeSettings(
        code_only=bool(config.get("code_only")), parse_retries=int(config.get("parse_retries", 2)),
        checks=leaf_checks(paper, nodes),
    )
    if judge_settings.checks:
        progress.log(f"{len(judge_settings.checks)} leaves are decided by programmatic checks")
    progress.log(
        f"Judging {paper.slug} v{version.number} ({version.leaf_count} leaves) with {endpoint.name} "
        f"at concurrency {endpoint_config.concurrency}{' (Code Development only)' if judge_settings.code_only else ''}"
    )
    state = {"cost": 0.0, "invalid": 0}
    step_every = max(1, version.leaf_count // 50)

    def on_result(result: LeafResult, done: int, total: int) -> None:
        state["cost"] += result.cost_usd
        state["invalid"] += 0 if result.valid else 1
        if not result.valid:
            progress.log(f"leaf {result.node_id} is invalid: {result.invalid_reason}", level="warning")
        if done % step_every == 0 or done == total:
            progress.metric(done, cost_usd=state["cost"], invalid_leaves=state["invalid"])
        # Raises JobCancelled when the user cancels: grade_tree then drops the queued leaves.
        progress.update(done / total, f"{done}/{total} leaves graded, {state['invalid']} invalid", step=done,
                        force=done == total)

    client = make_client(endpoint_config)
    try:
        outcome = grade_tree(
            nodes,
            PaperContext(paper.title, paper.markdown, paper.addendum, paper.judge_addendum),
            Submission(folder, reproduce_started_at=started_at),
            client,
            judge_settings,
            on_result=on_result,
            run_check=run_check,
        )
    finally:
        client.close()
    judge_run = save_judge_run(
        paper=paper, version=version, endpoint=endpoint, endpoint_snapshot=endpoint_config.snapshot(),
        outcome=outcome, judge_settings=judge_settings.as_dict(), job=job,
        submission=str(folder.relative_to(settings.DATA_DIR.resolve())), trajectory_id=config.get("trajectory"),
    )
    if outcome.results and outcome.n_invalid == len(outcome.results):
        # Nothing was graded (endpoint down, every answer unusable): a 0 here would be a false
        # reward. The run is kept for the audit trail; the job fails so callers retry.
        first = next(iter(outcome.results.values()))
        raise RuntimeError(
            f"no leaf could be graded ({first.invalid_reason}); judge run {judge_run.pk} keeps every attempt"
        )
    extra = {"reproduction": reproduced.as_dict()} if reproduced else {}
    return {
        **extra, "judge_run": judge_run.pk, "score": outcome.score, "leaves": judge_run.n_leaves,
        "invalid_leaves": judge_run.n_invalid, "cost_usd": judge_run.cost_usd, "rubric_hash": version.content_hash,
    }
