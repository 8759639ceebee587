"""The "distill" job: Research-Factory distillation by rejection sampling.

For each chosen train paper, N teacher runs of the agent (``worker.agent.run_agent``), each in a
fresh sandbox with the paper mounted read-only; every turn is saved as it happens, so a running
trajectory can be watched. Each final submission is judged by a ``judge`` job through the judge
queue (train papers at priority 9, after eval judging). Runs whose score passes the threshold (or
are among the top-k of their paper) are kept: accepted trajectories that form a named dataset
the SFT job can select; the others are kept for the record but rejected with the reason.

Finished runs are written to the job's checkpoint, so Retry resumes after the last finished run.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from django.conf import settings
from django.db import connections

from apps.datasets.sampling import RunScore, select_runs, summarise
from apps.datasets.services import create_dataset
from apps.jobs.models import Job
from apps.jobs.progress import JobCancelled, Progress
from apps.jobs.services.control import cancel_job
from apps.judging.llm.client import make_client
from apps.judging.models import ModelEndpoint
from apps.judging.services import request_judge_run
from apps.papers.models import Paper
from apps.trajectories.models import Trajectory
from apps.trajectories.recorder import TrajectoryRecorder
from apps.trajectories.services import review_trajectory
from worker.agent import AgentConfig, AgentTask, run_agent
from worker.judge.helping import help_with_queued_judge
from worker.sandbox import SandboxSpec, open_sandbox
from worker.training.rl_pool import RolloutStates, run_concurrently


class DistillError(RuntimeError):
    pass


def _recorder(paper: Paper, teacher: ModelEndpoint, job: Job, index: int):
    return TrajectoryRecorder.start(
        paper=paper, source="distilled", model=teacher.model, policy_version=f"teacher:{teacher.name}",
        title=f"{paper.slug} distill #{job.pk} run {index + 1}", meta={"distill_job": job.pk, "run": index},
    )


def _should_stop(progress: Progress):
    def check() -> bool:
        try:
            progress.check_cancelled()
        except JobCancelled:
            return True
        return False

    return check


def teacher_run(job: Job, paper: Paper, index: int, teacher: ModelEndpoint, progress: Progress) -> dict[str, Any]:
    """One agent run in a fresh sandbox; returns its record (trajectory, end state, submission)."""

    config = job.config
    task = AgentTask(paper_markdown=paper.markdown, addendum=paper.addendum,
                     instructions=config.get("instructions", ""), blacklist=list(paper.blacklist))
    # The agent sees paper.md, addendum.md and instructions.md read-only at /home/paper.
    mounts = task.write_files(settings.DATA_DIR / "distill" / f"job-{job.pk}" / "papers" / paper.slug)
    spec = SandboxSpec(
        backend=config.get("sandbox_backend", "auto"), image=config.get("image", ""),
        cpus=float(config.get("cpus", 2)), memory_mb=int(config.get("memory_mb", 4096)), network=False,
        wall_clock_s=float(config.get("time_limit_s", 3600)) + 120, mounts_ro=mounts, job_id=job.pk,
    )
    agent_config = AgentConfig(
        max_steps=int(config.get("max_steps", 200)), time_limit_s=float(config.get("time_limit_s", 3600)),
        l_max=int(config.get("l_max", 32768)), tool_timeout_s=float(config.get("tool_timeout_s", 600)),
    )
    recorder = _recorder(paper, teacher, job, index)
    record: dict[str, Any] = {"paper": paper.slug, "index": index, "trajectory": recorder.trajectory.pk,
                              "submission": "", "error": "", "end_state": "error", "steps": 0, "flagged": False,
                              "teacher_cost_usd": 0.0}
    chat = make_client(teacher.to_config())
    try:
        with open_sandbox(spec) as sandbox:
            result = run_agent(chat, sandbox, task, agent_config, on_turn=recorder.add_turn,
                               should_stop=_should_stop(progress))
            # A flagged run is disqualified whatever it wrote: nothing to export or judge.
            if result.final_commit and not result.flagged:
                record["submission"], record["error"] = _export(job, paper, index, sandbox, result.final_commit)
            recorder.finish(result, submission_url=record["submission"])
    except Exception as exc:  # the sandbox could not open or export: this run is lost, the job goes on
        recorder.abandon(f"{type(exc).__name__}: {exc}")
        record["error"] = f"{type(exc).__name__}: {exc}"[:500]
        return record
    finally:
        close = getattr(chat, "close", None)
        if close:
            close()
    usage = result.usage or {}
    record.update(end_state=result.end_state, steps=result.steps, wall_s=round(result.wall_s, 3),
                  flagged=bool(result.flagged), error=result.error or record["error"],
                  teacher_cost_usd=float(usage.get("cost_usd", usage.get("cost", 0.0)) or 0.0),
                  teacher_tokens=int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0)))
    if result.end_state == "cancelled":
        raise JobCancelled()
    return record


def _export(job: Job, paper: Paper, index: int, sandbox: Any, commit: str) -> tuple[str, str]:
    """The final submission copied to the data folder for the judge: (relative path, error)."""
    relative = f"submissions/distill-{job.pk}-{paper.slug}-{index + 1}"
    dest = settings.DATA_DIR / relative
    if dest.exists():
        shutil.rmtree(dest)  # a resumed run's earlier, unfinished export
    try:
        sandbox.export_submission(dest, commit)
    except Exception as exc:
        shutil.rmtree(dest, ignore_errors=True)
        return "", f"the submission could not be exported: {type(exc).__name__}: {exc}"[:500]
    return relative, ""


def _cancel_judges(records: list[dict[str, Any]]) -> None:
    """A cancelled distillation cancels the judge jobs it queued that have not finished."""

    ids = [r["judge_job"] for r in records if r.get("judge_job")]
    for judge_job in Job.objects.filter(pk__in=ids).exclude(state__in=Job.FINISHED):
        cancel_job(judge_job)


def judge_runs(job: Job, records: list[dict[str, Any]], judge: ModelEndpoint, progress: Progress, *,
               wait: bool = True) -> None:
    """Queue a judge job per unjudged submission; with ``wait``, wait for them all, filling in
    each record's score and cost."""

    config = job.config
    help_after = float(config.get("judge_help_after_s", 30))
    pending: dict[int, dict[str, Any]] = {}
    for record in records:
        if record.get("score") is not None or record.get("judge_error"):
            continue
        if record.get("flagged"):
            record["score"] = 0.0  # disqualified: the monitor saw a blacklisted URL
            continue
        if not record.get("submission"):
            record["judge_error"] = "no submission to judge" + (f" ({record['error']})" if record.get("error") else "")
            continue
        if record.get("judge_job"):
            pending[int(record["judge_job"])] = record
            continue
        paper = Paper.objects.get(slug=record["paper"])
        judge_job = request_judge_run(paper=paper, endpoint=judge, submission=record["submission"],
                                      user=job.created_by, code_only=bool(config.get("code_only")),
                                      trajectory_id=record["trajectory"])
        record["judge_job"] = judge_job.pk
        pending[judge_job.pk] = record
    if not wait:
        return
    queued_since = {pk: time.monotonic() for pk in pending}
    while pending:
        try:
            progress.check_cancelled()
        except JobCancelled:
            _cancel_judges(records)
            raise
        for done in Job.objects.filter(pk__in=list(pending), state__in=Job.FINISHED):
            record = pending.pop(done.pk)
            if done.state == Job.State.SUCCEEDED and done.result.get("score") is not None:
                record["score"] = float(done.result["score"])
                record["judge_run"] = done.result.get("judge_run")
                record["judge_cost_usd"] = float(done.result.get("cost_usd") or 0.0)
                # Live on the job page: each score as it arrives, and the money spent so far.
                judged = sum(1 for r in records if r.get("score") is not None)
                progress.metric(judged, score=record["score"], cost_usd=_cost(records))
            else:
                record["judge_error"] = f"judge job {done.pk} {done.state}: {done.error or 'no score'}"
                progress.log(f"{record['paper']} run {record['index'] + 1}: {record['judge_error']}", level="warning")
        helped = help_with_queued_judge(pending, lambda pk: time.monotonic() - queued_since[pk], help_after)
        if helped is not None:
            progress.log(f"judge job #{helped} still queued after {help_after:g} s: ran it here")
        elif pending:
            time.sleep(0.2)


def _judge_failed_again(records: list[dict[str, Any]]) -> None:
    """On Retry, runs whose judge job failed or was cancelled are judged again."""
    failed = set(Job.objects.filter(pk__in=[r["judge_job"] for r in records if r.get("judge_job")],
                                    state__in=(Job.State.FAILED, Job.State.CANCELLED)).values_list("pk", flat=True))
    for record in records:
        if record.get("score") is None and record.get("judge_job") in failed:
            record.pop("judge_job")
            record.pop("judge_error", None)


def _cost(records: list[dict[str, Any]]) -> float:
    return round(sum(float(r.get("teacher_cost_usd") or 0.0) + float(r.get("judge_cost_usd") or 0.0)
                     for r in records), 6)


def _scores(records: list[dict[str, Any]]) -> list[RunScore]:
    return [RunScore(r["paper"], int(r["index"]), r.get("score"), bool(r.get("flagged")),
                     float(r.get("teacher_cost_usd", 0.0)) + float(r.get("judge_cost_usd", 0.0))) for r in records]


def run(job: Job, progress: Progress) -> dict[str, Any]:
    config = job.config
    slugs = [s for s in str(config["papers"]).split(",") if s]
    papers = {p.slug: p for p in Paper.objects.filter(slug__in=slugs)}
    teacher = ModelEndpoint.objects.get(name=config["teacher"])
    judge = ModelEndpoint.objects.get(name=config["judge"])
    n_runs = int(config.get("runs_per_paper", 1))
    threshold = config.get("threshold")
    top_k = config.get("top_k")
    records: list[dict[str, Any]] = list(job.checkpoint.get("runs") or [])
    done = {(r["paper"], int(r["index"])) for r in records}
    if records:
        progress.log(f"Resuming after {len(records)} finished runs")
        _judge_failed_again(records)
    total = len(slugs) * n_runs
    progress.set_total(total, stage="teacher runs")
    todo = [(slug, index) for slug in slugs for index in range(n_runs) if (slug, index) not in done]
    # The teacher runs go through the rollout pool: up to ``concurrency`` agents at once, each in
    # its own sandbox (KLONG_SANDBOXES_PER_HOST still caps a Docker host); progress, the judge
    # requests and the checkpoint are written here, in the job's thread, as each run finishes.
    concurrency = max(1, int(config.get("concurrency", min(4, teacher.concurrency))))
    states = RolloutStates(concurrency)

    def work(item: tuple[str, int]) -> dict[str, Any]:
        try:
            return teacher_run(job, papers[item[0]], item[1], teacher, progress)
        finally:
            connections.close_all()  # this thread's own connections

    def finished(item: tuple[str, int], record: Any) -> None:
        slug, index = item
        if isinstance(record, BaseException):
            raise record
        records.append(record)
        progress.log(f"{slug} run {index + 1}: {record['end_state']} after {record['steps']} steps"
                     + (" (flagged by the monitor)" if record["flagged"] else "")
                     + (f"; {record['error']}" if record["error"] else ""))
        counts = states.snapshot()
        progress.update(len(records) / total, f"teacher runs: {counts['on_model']} running, {len(records)} of "
                        f"{total} done", step=len(records), force=True)
        progress.metric(len(records), teacher_cost_usd=_cost(records))
        # Judge as runs finish: judge workers grade while the teacher goes on.
        judge_runs(job, [record], judge, progress, wait=False)
        progress.checkpoint({"step": len(records), "runs": records})

    try:
        run_concurrently(todo, work, concurrency, finished, states)
    except JobCancelled:
        _cancel_judges(records)
        raise
    if records and all(r.get("error") and not r.get("submission") for r in records):
        # Nothing to judge and nothing to keep: a broken setup (no sandbox backend, endpoint down).
        raise DistillError(f"every teacher run failed; the first: {records[0]['error']}")
    progress.update(1.0, "judging the submissions", step=total, force=True)
    judge_runs(job, records, judge, progress)
    progress.checkpoint({"step": len(records), "runs": records})
    if not any(r.get("score") is not None for r in records):
        # Nothing judged, nothing to select from: not a success (Retry judges them again).
        first = next(r for r in records if r.get("judge_error") or r.get("error"))
        raise DistillError(f"none of the {len(records)} runs could be judged; {first['paper']} run "
                           f"{first['index'] + 1}: {first.get('judge_error') or first['error']}")
    verdicts = select_runs(_scores(records), threshold, top_k)
    for record in sorted(records, key=lambda r: (r["paper"], r["index"])):
        verdict = verdicts[(record["paper"], int(record["index"]))]
        record["kept"] = verdict.kept
        record["reason"] = verdict.reason if not record.get("judge_error") else record["judge_error"]
        trajectory = Trajectory.objects.get(pk=record["trajectory"])
        if record.get("score") is not None:
            Trajectory.objects.filter(pk=trajectory.pk).update(final_score=record["score"])
        if not record.get("flagged"):  # the recorder already rejected a flagged run, naming the URL
            review_trajectory(trajectory, Trajectory.Review.ACCEPTED if verdict.kept else Trajectory.Review.REJECTED,
                              f"distill job #{job.pk}: {record['reason']}", job.created_by)
    summary = summarise(_scores(records), verdicts)
    progress.metric(total, acceptance_rate=float(summary["acceptance_rate"]))
    kept_ids = [r["trajectory"] for r in records if r["kept"]]
    dataset = create_dataset(
        config["dataset"], kept_ids, user=job.created_by, origin_job=job, threshold=threshold, top_k=top_k,
        notes=f"Kept by rejection sampling in distill job #{job.pk}.", stats=summary,
    )
    progress.log(f"Kept {len(kept_ids)} of {len(records)} runs ({summary['acceptance_rate']:.0%}): dataset "
                 f"{dataset.name!r}")
    return {**summary, "dataset": dataset.pk, "dataset_name": dataset.name, "threshold": threshold, "top_k": top_k,
            "scores": [r["score"] for r in records if r.get("score") is not None],
            "runs_detail": [{k: r.get(k) for k in ("paper", "index", "trajectory", "end_state", "steps", "flagged",
                                                   "score", "kept", "reason", "judge_job", "teacher_cost_usd",
                                                   "judge_cost_usd")} for r in records]}
