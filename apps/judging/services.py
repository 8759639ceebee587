"""Judging services: endpoints, submissions, judge requests (with the priority rule), saving runs.

The page, the API, the worker engine and the commands all call these functions.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.jobs.services.launching import launch_job
from apps.judging.judge.grader import JudgeOutcome, LeafResult, graded_tree
from apps.judging.judge.submission import SubmissionError, extract_archive
from apps.judging.llm.client import ChatClient
from apps.judging.llm.config import EndpointConfigError
from apps.judging.llm.local import check_model_folder
from apps.judging.llm.records import LLMError
from apps.judging.models import JudgeRun, LeafGrade, ModelEndpoint
from apps.ops.artifacts import fetch_artifact, publish_artifact
from apps.papers.models import Paper
from apps.rubrics.models import RubricVersion
from apps.rubrics.paperbench import RubricFormatError, flatten, leaf_mask, load_json_bytes

# Eval judging always goes first: a flood of train-split requests cannot starve it (lower = sooner).
JUDGE_PRIORITY = {Paper.Split.EVAL: 0, Paper.Split.HELD_OUT: 0, Paper.Split.TRAIN: 9}
SUBMISSIONS = "submissions"
JUDGE_EVAL_TREES = "judge_eval"
CONNECTION_TEST_TIMEOUT_S = 15.0


def judge_priority(paper: Paper) -> int:
    return JUDGE_PRIORITY.get(paper.split, 9)


def judge_priority_for_config(config: dict[str, Any]) -> int:
    """The judge kind's priority rule, applied however a judge job is launched."""
    paper = Paper.objects.filter(pk=config.get("paper")).first()
    return judge_priority(paper) if paper else 9


# --- Submissions --------------------------------------------------------------------------


def submissions_root() -> Path:
    root = Path(settings.DATA_DIR) / SUBMISSIONS
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def submission_folder(relative: str) -> Path:
    """The submission folder named by a path relative to the data folder; it must lie under submissions/."""
    full = (Path(settings.DATA_DIR) / relative).resolve()
    root = submissions_root()
    if root not in full.parents:
        raise ValidationError(f"A submission must be a folder under {SUBMISSIONS}/ in the data folder.")
    # Stored by another machine (KLONG_STORAGE=s3): fetched from the bucket on first use.
    if not full.is_dir() and not fetch_artifact(full):
        raise ValidationError(f"Submission folder {relative!r} does not exist.")
    return full


def store_submission_upload(upload) -> str:
    """Extract an uploaded tar/zip (checked: paths, links, sizes) into a new submission folder.

    Returns the folder relative to the data folder. Raises ``ValidationError`` on a refused upload.
    """
    limit = int(settings.KLONG_MAX_UPLOAD_BYTES)
    if getattr(upload, "size", 0) > limit:
        raise ValidationError(f"The upload is larger than {limit} bytes (KLONG_MAX_UPLOAD_BYTES).")
    name = uuid.uuid4().hex
    dest = submissions_root() / name
    with tempfile.NamedTemporaryFile(dir=submissions_root(), suffix=".upload") as tmp:
        for chunk in upload.chunks():
            tmp.write(chunk)
        tmp.flush()
        try:
            extract_archive(Path(tmp.name), dest)  # KLONG_MAX_UNPACKED_BYTES and _MEMBER_BYTES
        except SubmissionError as exc:
            raise ValidationError(f"Submission refused: {exc}") from None
    _unwrap_single_folder(dest)
    publish_artifact(dest)  # for the judge worker, which may run on another machine
    return f"{SUBMISSIONS}/{name}"


def _unwrap_single_folder(dest: Path) -> None:
    # `tar czf sub.tgz submission/` wraps everything in one folder; judge its contents instead.
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        inner = entries[0]
        for child in inner.iterdir():
            shutil.move(str(child), dest / child.name)
        inner.rmdir()


# --- Judge requests -------------------------------------------------------------------------


def request_judge_run(
    *, paper: Paper, endpoint: ModelEndpoint, submission: str, user, version: RubricVersion | None = None,
    code_only: bool = False, trajectory_id: int | None = None, reproduce_started_at: float | None = None,
    reproduce: dict[str, Any] | None = None,
):
    """Queue a judge job at its split's priority (eval first). Returns the Job.

    ``reproduce``: the reproduction step's options (``reproduce_timeout``, ``reproduce_gpus``, ...,
    the judge form's names): the job runs reproduce.sh in a fresh sandbox and grades what it leaves.
    """

    if version is None:
        version = paper.rubric_versions.order_by("-number").first()
        if version is None:
            raise ValidationError(f"Paper {paper.slug} has no saved rubric version to judge against.")
    elif version.paper_id != paper.pk:
        raise ValidationError("That rubric version belongs to another paper.")
    config: dict[str, Any] = {
        "paper": paper.pk, "rubric_version": version.pk, "endpoint": endpoint.name, "submission": submission,
        "code_only": code_only,
    }
    if trajectory_id is not None:
        config["trajectory"] = trajectory_id
    if reproduce_started_at is not None:
        config["reproduce_started_at"] = reproduce_started_at
    if reproduce is not None:
        config.update(reproduce, reproduce=True)
    title = f"Judge {paper.slug} v{version.number} with {endpoint.name}" + (" (code only)" if code_only else "")
    return launch_job("judge", config, user, title=title, priority=judge_priority(paper))


# --- JudgeEval -----------------------------------------------------------------------------


def judge_eval_tree_path(relative: str) -> Path:
    root = (Path(settings.DATA_DIR) / JUDGE_EVAL_TREES).resolve()
    full = (Path(settings.DATA_DIR) / relative).resolve()
    if root not in full.parents or not full.is_file():
        raise ValidationError(f"A graded tree must be a stored file under {JUDGE_EVAL_TREES}/ in the data folder.")
    return full


def store_judge_eval_tree(upload) -> str:
    """Check an uploaded human-graded tree (valid JSON rubric with a score on every leaf) and store it."""

    limit = int(settings.KLONG_MAX_UPLOAD_BYTES)
    if getattr(upload, "size", 0) > limit:
        raise ValidationError(f"The upload is larger than {limit} bytes (KLONG_MAX_UPLOAD_BYTES).")
    data = upload.read()
    try:
        nodes = flatten(load_json_bytes(data))
    except RubricFormatError as exc:
        raise ValidationError(f"Not a graded PaperBench tree: {exc.message}") from None
    ungraded = [n for n, leaf in zip(nodes, leaf_mask(nodes), strict=True) if leaf and n.score not in (0, 1)]
    if ungraded:
        raise ValidationError(f"{len(ungraded)} leaves have no human score of 0 or 1 (e.g. node {ungraded[0].node_id}).")
    root = Path(settings.DATA_DIR) / JUDGE_EVAL_TREES
    root.mkdir(parents=True, exist_ok=True)
    name = f"{uuid.uuid4().hex}.json"
    (root / name).write_bytes(data)
    return f"{JUDGE_EVAL_TREES}/{name}"


def request_judge_eval(*, graded_tree: str, endpoint: ModelEndpoint, user, submission: str = "",
                       paper: Paper | None = None, code_only: bool = False, title: str = ""):

    config: dict[str, Any] = {"graded_tree": graded_tree, "endpoint": endpoint.name, "code_only": code_only}
    if submission:
        config["submission"] = submission
    if paper is not None:
        config["paper"] = paper.pk
    return launch_job("judge_eval", config, user, title=title or f"JudgeEval with {endpoint.name}", priority=5)


# --- Saving a run ---------------------------------------------------------------------------


@transaction.atomic
def save_judge_run(
    *, paper: Paper, version: RubricVersion, endpoint: ModelEndpoint | None, endpoint_snapshot: dict[str, Any],
    outcome: JudgeOutcome, judge_settings: dict[str, Any], submission: str, job=None, trajectory_id: int | None = None,
) -> JudgeRun:
    totals = outcome.totals()
    run = JudgeRun.objects.create(
        paper=paper, rubric_version=version, rubric_hash=version.content_hash, kind=JudgeRun.Kind.MODEL,
        judge_name=f"{endpoint_snapshot.get('name', '?')} ({endpoint_snapshot.get('model', '?')})"[:200],
        score=outcome.score, job=job, endpoint=endpoint, endpoint_snapshot=endpoint_snapshot,
        settings=judge_settings, code_only=bool(judge_settings.get("code_only")), split=paper.split,
        submission=submission, trajectory_id=trajectory_id,
        node_scores={"scores": outcome.scores, "invalid": outcome.invalid_below, "graded": outcome.graded_below},
        n_leaves=totals["leaves"], n_invalid=totals["invalid"], calls=totals["calls"],
        prompt_tokens=totals["prompt_tokens"], completion_tokens=totals["completion_tokens"],
        cost_usd=totals["cost_usd"], duration_s=totals["duration_s"],
    )
    LeafGrade.objects.bulk_create(
        [
            LeafGrade(
                run=run, node_index=r.index, node_id=str(r.node_id)[:100], score=r.score if r.valid else None,
                valid_score=r.valid, invalid_reason=r.invalid_reason, explanation=r.explanation,
                category=r.category or "", prompt=r.messages, response=r.response, responses=r.responses,
                files=r.files, calls=r.calls, prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
                cost_usd=r.cost_usd, latency_s=r.latency_s,
            )
            for r in sorted(outcome.results.values(), key=lambda r: r.index)
        ],
        batch_size=500,
    )
    return run


def run_graded_tree(run: JudgeRun) -> dict[str, Any]:
    """A stored model run as a PaperBench graded tree (score, valid_score, explanation, judge_metadata)."""

    nodes = flatten(run.rubric_version.tree)
    results = {
        g.node_index: LeafResult(
            index=g.node_index, node_id=g.node_id, category=g.category or None, valid=g.valid_score,
            score=int(g.score) if g.score is not None else None, explanation=g.explanation,
            invalid_reason=g.invalid_reason, files=g.files, calls=g.calls, prompt_tokens=g.prompt_tokens,
            completion_tokens=g.completion_tokens, cost_usd=g.cost_usd,
        )
        for g in run.grades.defer("prompt", "response", "responses")
    }
    stored = run.node_scores or {}
    outcome = JudgeOutcome(
        nodes, results, stored.get("scores") or [0.0] * len(nodes), stored.get("invalid") or [0] * len(nodes),
        stored.get("graded") or [0] * len(nodes), "Code Development" if run.code_only else None,
    )
    return graded_tree(outcome)


# --- Endpoints ------------------------------------------------------------------------------


@dataclass(slots=True)
class ConnectionTest:
    ok: bool
    message: str
    latency_s: float | None = None
    reply: str = ""
    # The endpoint as configured cannot be tested (its URL, key variable or params, or a URL that
    # redirects elsewhere): the API answers 400 rather than a test outcome.
    refused: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "message": self.message, "latency_s": self.latency_s, "reply": self.reply}


def check_endpoint_connection(endpoint: ModelEndpoint) -> ConnectionTest:
    """One tiny chat call (no retries, short timeout); the outcome is stored on the endpoint.

    It runs inside the request on purpose: the user waits for this answer anyway, and the call is
    bounded by CONNECTION_TEST_TIMEOUT_S. A local model is only checked on disk: loading torch
    into the web process is not worth a button. The outcome says reachable or not, the HTTP
    status, or "not an OpenAI-compatible API", and nothing of what the server sent but the
    model's answer: the URL may point at any server the web process can reach.
    """

    try:
        config = endpoint.to_config()
        if config.backend == ModelEndpoint.Backend.TRANSFORMERS:
            problems = check_model_folder(config.model)
            result = ConnectionTest(not problems, "; ".join(problems) or f"model folder {config.model} looks loadable")
        else:
            config = replace(config, timeout_s=min(config.timeout_s, CONNECTION_TEST_TIMEOUT_S), max_retries=0)
            with ChatClient(config) as client:
                answer = client.chat([{"role": "user", "content": "Reply with the single word OK."}], max_tokens=5)
            result = ConnectionTest(
                True, f"answered in {answer.record.latency_s:.2f} s ({answer.record.prompt_tokens} + "
                f"{answer.record.completion_tokens} tokens)", answer.record.latency_s, answer.text[:200],
            )
    except EndpointConfigError as exc:
        result = ConnectionTest(False, str(exc), refused=True)
    except LLMError as exc:
        result = ConnectionTest(False, connection_failure(exc), refused=exc.status is not None and 300 <= exc.status < 400)
    ModelEndpoint.objects.filter(pk=endpoint.pk).update(
        last_test_at=timezone.now(), last_test_ok=result.ok, last_test_message=result.message[:2000]
    )
    return result


def connection_failure(exc: LLMError) -> str:
    """A failed test call in words: the client's own reason, or the HTTP status with a hint."""
    status = exc.status
    if status is None or status < 400:
        # No reply, a redirect, or a reply that is no chat completion: the client's words hold
        # no part of the reply.
        return str(exc)
    hint = {401: "check the key", 403: "check the key", 404: "check the base URL and the model name",
            429: "rate-limited"}.get(status, "")
    return f"reachable, but it answered HTTP {status}" + (f" ({hint})" if hint else "")


# --- Programmatic leaves ----------------------------------------------------------------------


def validate_check_leaf(paper: Paper, node_id: str) -> None:
    """A check must name a leaf of the paper's latest rubric version."""

    version = paper.rubric_versions.order_by("-number").first()
    if version is None:
        raise ValidationError(f"Paper {paper.slug} has no saved rubric version yet.")
    nodes = flatten(version.tree)
    is_leaf = leaf_mask(nodes)
    kinds = {is_leaf[n.index] for n in nodes if str(n.node_id) == str(node_id)}
    if not kinds:
        raise ValidationError(f"No node with id {node_id!r} in {paper.slug} v{version.number}.")
    if True not in kinds:
        raise ValidationError(f"Node {node_id!r} is not a leaf: only leaves can be programmatic.")
