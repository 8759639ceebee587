"""The jobs app's own kinds: the worker self-test, and the training kinds whose forms live here
(trajectory-splitting SFT, progressive RL, an agent run on a paper)."""

from __future__ import annotations

from typing import Any

from apps.jobs.forms import SelftestForm, SFTForm
from apps.jobs.forms_agent import AgentRunForm
from apps.jobs.forms_rl import RLForm
from apps.jobs.registry import JobKind, register
from apps.trajectories.models import Trajectory


def agent_run_context(job: Any) -> dict[str, Any]:
    """The agent-run card: the trajectory the run records (live while it runs)."""
    trajectories = Trajectory.objects.filter(meta__job=job.pk).order_by("-pk").only(
        "pk", "title", "live", "turn_count", "end_state", "review", "meta", "submission_url"
    )
    return {"trajectories": list(trajectories)}


register(JobKind(
    name="selftest",
    label="Worker self-test",
    engine="worker.engines.selftest.run",
    description="Round-trips a small task through a worker and streams its progress: proves the "
    "queue, the worker, the database and the live updates work together.",
    form=SelftestForm,
))

register(JobKind(
    name="sft",
    label="Trajectory-splitting SFT",
    queue="gpu",
    engine="worker.engines.sft.run",
    description="Splits the selected trajectories into overlapping windows (pinned prefix, truncated "
    "history) and fine-tunes a local model on their assistant turns with TRL's SFTTrainer.",
    form=SFTForm,
    gpus=1,
    routed_by_gpus=True,
))

register(JobKind(
    name="rl",
    label="Progressive RL",
    engine="worker.engines.rl.run",
    routed_by_gpus=True,
    description="KLong's progressive RL: stages with growing rollout timeouts (2 h, 4 h, 6 h), n rollouts "
    "per task split into sub-trajectories, each judged on its submission state; advantage = Q minus the "
    "task's mean; clipped policy-gradient updates; a checkpoint at every stage boundary (docs/rl.md).",
    form=RLForm,
    # Real runs take days (three stages of 2-6 h rollouts, many iterations): not the 6 h default.
    time_limit_s=14 * 24 * 3600,
    partial="jobs/_rl_stages.html",
    scripts=("js/job-rl.js",),
))

register(JobKind(
    name="ranks",
    label="Ranks of one node (multi-node training)",
    engine="worker.engines.ranks.run",
    description="One node's ranks of an SFT or RL job trained over several nodes: the job queues one per "
    "other node on its GPU queue, and each starts that node's ranks at the job's rendezvous "
    "(docs/training-at-scale.md).",
    routed_by_gpus=True,
    time_limit_s=14 * 24 * 3600,  # as long as the RL job it belongs to
))

register(JobKind(
    name="agent_run",
    label="Run an agent on a paper",
    engine="worker.engines.agent_run.run",
    description="One agent (bash, python, read/write/search files, submit) reproduces one paper in a sandbox "
    "with a chosen model endpoint; every turn is recorded live as a trajectory, the submission is snapshotted "
    "at each change and exported for judging (docs/sandboxes-and-agent.md).",
    form=AgentRunForm,
    uses_sandboxes=True,
    routed_by_gpus=True,
    partial="jobs/_agent_run.html",
    partial_context=agent_run_context,
))
