"""The "agent_run" job: one agent on one paper with one model endpoint, in a sandbox.

The trajectory is recorded turn by turn (apps/trajectories/recorder.py) so the trajectory page
follows the run; the final submission is exported to data/submissions/agent-run-<job>/ where
the judge job can grade it. Cancelling kills the running command at once: a watcher closes the
sandbox when the job is marked cancelling, and the agent ends "cancelled".
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.jobs.models import Job
from apps.jobs.progress import JobCancelled, Progress
from apps.judging.llm.client import make_client
from apps.judging.models import ModelEndpoint
from apps.papers.models import Paper
from apps.trajectories.models import Trajectory
from apps.trajectories.recorder import TrajectoryRecorder
from worker.agent import AgentConfig, AgentTask, AgentTurn, run_agent
from worker.sandbox import SandboxSpec, open_sandbox

CANCEL_POLL_S = 1.0


class CancelWatch:
    """Polls the job row; on a cancel request, closes the sandbox (killing what runs in it)."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.cancelled = threading.Event()
        self._stop = threading.Event()
        self.sandbox: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"klong-cancel-{job_id}")

    def _run(self) -> None:
        try:
            while not self._stop.wait(CANCEL_POLL_S):
                if Job.objects.filter(pk=self.job_id, state=Job.State.CANCELLING).exists():
                    self.cancelled.set()
                    if self.sandbox is not None:
                        self.sandbox.close()
                    return
        finally:
            connection.close()  # this thread's own connection: never left open on the database

    def __enter__(self) -> CancelWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def submission_path(job: Job) -> str:
    return f"submissions/agent-run-{job.pk}"


def run(job: Job, progress: Progress) -> dict[str, Any]:
    config = job.config
    paper = Paper.objects.get(pk=config["paper"])
    endpoint = ModelEndpoint.objects.get(name=config["endpoint"])
    endpoint_config = endpoint.to_config()  # snapshot: later edits of the endpoint do not change this run
    task = AgentTask(paper_markdown=paper.markdown, addendum=paper.addendum,
                     instructions=config.get("instructions", ""), blacklist=list(paper.blacklist or []))
    work = settings.DATA_DIR / "agent-runs" / f"job-{job.pk}-attempt-{job.attempt}"
    time_limit = float(config.get("time_limit_s", 3600))
    spec = SandboxSpec(
        backend=config.get("backend") or settings.KLONG_SANDBOX_BACKEND,
        image=config.get("image") or settings.KLONG_SANDBOX_IMAGE,
        cpus=float(config.get("cpus", 2)), memory_mb=int(config.get("memory_mb", 4096)),
        gpus=int(config.get("gpus", 0)), network=bool(config.get("network", False)),
        wall_clock_s=time_limit + 300, mounts_ro=task.write_files(work / "paper"), job_id=job.pk,
    )
    agent_config = AgentConfig(
        max_steps=int(config.get("max_steps", 100)), time_limit_s=time_limit, l_max=int(config.get("l_max", 32768)),
        reserve_tokens=int(config.get("reserve_tokens", 4096)), tool_timeout_s=float(config.get("tool_timeout_s", 600)),
        temperature=config.get("temperature"),
    )
    max_steps = agent_config.max_steps
    progress.set_total(max_steps, "agent")
    # A re-queued job (its worker died) starts a fresh run; the dead attempt's trajectory stops
    # being shown as live and keeps its turns.
    Trajectory.objects.filter(meta__job=job.pk, live=True).update(
        live=False, end_state=Trajectory.EndState.ERROR, ended_at=timezone.now()
    )
    recorder = TrajectoryRecorder.start(
        paper=paper, source=config.get("source", "distilled"), model=endpoint_config.model,
        policy_version=config.get("policy_version", ""), task=paper.slug,
        meta={"job": job.pk, "endpoint": endpoint.name, "sandbox": spec.backend},
    )
    progress.log(f"Agent on {paper.slug} with {endpoint.name}; trajectory {recorder.trajectory.pk}")
    totals = {"steps": 0, "cost": 0.0}

    def on_turn(turn: AgentTurn) -> None:
        recorder.add_turn(turn)
        if turn.role == "assistant":
            totals["steps"] += 1
            totals["cost"] += float(turn.meta.get("cost_usd") or 0.0)
            progress.metric(totals["steps"], cost_usd=totals["cost"],
                            context_tokens=float(turn.meta.get("context_tokens") or 0))
            try:
                progress.update(totals["steps"] / max_steps, f"step {totals['steps']} of at most {max_steps}",
                                step=totals["steps"])
            except JobCancelled:
                watch.cancelled.set()  # the loop sees it through should_stop, and ends "cancelled"
        elif turn.submission_commit:
            progress.log(f"turn {turn.index}: submission changed ({turn.submission_commit[:10]})")

    client = make_client(endpoint_config)
    result = None
    try:
        with CancelWatch(job.pk) as watch, open_sandbox(spec) as sandbox:
            watch.sandbox = sandbox
            progress.log(f"Sandbox: {sandbox.backend}" + (f" ({spec.image})" if sandbox.backend == "docker" else ""))
            result = run_agent(client, sandbox, task, agent_config, on_turn=on_turn,
                               should_stop=watch.cancelled.is_set)
            exported = ""
            if not sandbox.closed:
                folder = settings.DATA_DIR / submission_path(job)
                sandbox.export_submission(folder, result.final_commit)
                exported = submission_path(job)
    except BaseException as exc:
        if result is None:
            recorder.abandon(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        client.close()
    trajectory = recorder.finish(result, submission_url=exported, extra={"sandbox": sandbox.backend})
    if exported:
        progress.artifact("submission", exported, kind="other", commit=result.final_commit,
                          trajectory=trajectory.pk)
    if result.end_state == "cancelled":
        raise JobCancelled()
    return {
        "trajectory": trajectory.pk, "end_state": result.end_state, "steps": result.steps,
        "final_commit": result.final_commit, "flagged": result.flagged, "error": result.error,
        "usage": result.usage, "submission": exported, "wall_s": round(result.wall_s, 2),
    }
