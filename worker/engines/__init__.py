"""Job engines: one function per job kind, ``run(job, progress) -> result dict``.

Engines are plain functions so they can be called from a test, a management command or the
Celery task alike; the task only claims the job and records the outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apps.jobs.models import Job
from worker.progress import Progress

Engine = Callable[[Job, Progress], dict[str, Any]]


@dataclass(frozen=True)
class JobKind:
    name: str
    label: str
    queue: str
    engine: str  # dotted path, imported lazily so the web process never loads torch
    description: str
    # Dotted path to the Django form that validates the config (defaults, help text, errors);
    # the launch page and the API both use it. Empty: the engine checks its own config.
    form: str = ""
    gpus: int = 0
    config_version: int = 1
    # Seconds before the task is asked to stop (SoftTimeLimitExceeded -> a failed job with that
    # reason); None: the worker-wide CELERY_TASK_SOFT_TIME_LIMIT.
    time_limit_s: int | None = None
    # Dotted path to ``f(config) -> priority`` that overrides the launcher's choice, for kinds
    # whose order is a rule (judging: eval papers before train papers), whoever launches them.
    priority_for: str = ""
    # The config's "gpus" (default ``gpus``) picks the queue instead of ``queue``: cpu for 0, else
    # the queue of jobs needing that many GPUs (worker/queues.py). SFT, RL, agent runs, the GPU check.
    routed_by_gpus: bool = False
    # The engine opens sandboxes (worker/sandbox): when its task ends, any container it left
    # behind is removed (worker/sandbox/signals.py).
    uses_sandboxes: bool = False


KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> None:
    KINDS[kind.name] = kind


def engine_for(kind: str) -> Engine:
    from importlib import import_module

    module_name, _, func = KINDS[kind].engine.rpartition(".")
    return getattr(import_module(module_name), func)


register(
    JobKind(
        name="selftest",
        label="Worker self-test",
        queue="cpu",
        engine="worker.engines.selftest.run",
        description="Round-trips a small task through a worker and streams its progress: proves the "
        "queue, the worker, the database and the live updates work together.",
        form="apps.jobs.forms.SelftestForm",
    )
)

register(
    JobKind(
        name="trajectory_import",
        label="Import trajectories",
        queue="cpu",
        engine="worker.engines.trajectory_import.run",
        description="Imports a large trajectory file and counts its tokens (the same service as "
        "`manage.py import_trajectories`); config: path, paper (id), skip_bad.",
    )
)

register(
    JobKind(
        name="judge",
        label="Judge a submission",
        queue="judge",
        engine="worker.engines.judge.run",
        priority_for="apps.judging.services.judge_priority_for_config",
        description="Grades a submission against a paper's rubric version leaf by leaf with a model "
        "endpoint (PaperBench's protocol); stores every prompt, answer, token count and cost. Eval-split "
        "papers are queued at priority 0 and train-split ones at 9 (apps.judging.services.request_judge_run).",
        form="apps.judging.forms.JudgeConfigForm",
    )
)

register(
    JobKind(
        name="judge_eval",
        label="JudgeEval: judge vs human grades",
        queue="judge",
        engine="worker.engines.judge_eval.run",
        description="Runs a judge over a human-graded PaperBench tree and reports accuracy and macro "
        "precision/recall/F1 over leaves, overall and per category (as `manage.py judge_eval`).",
        form="apps.judging.forms.JudgeEvalConfigForm",
    )
)

register(
    JobKind(
        name="sft",
        label="Trajectory-splitting SFT",
        queue="gpu",
        engine="worker.engines.sft.run",
        description="Splits the selected trajectories into overlapping windows (pinned prefix, truncated "
        "history) and fine-tunes a local model on their assistant turns with TRL's SFTTrainer.",
        form="apps.jobs.forms.SFTForm",
        gpus=1,
        routed_by_gpus=True,
    )
)

register(
    JobKind(
        name="trajectory_tokens",
        label="Count trajectory tokens",
        queue="cpu",
        engine="worker.engines.trajectory_tokens.run",
        description="Counts every turn again with the configured tokenizer (KLONG_TOKENIZER_PATH); config: "
        "trajectories (ids), or none for every trajectory counted with another tokenizer or estimated.",
    )
)

register(
    JobKind(
        name="gpu_check",
        label="GPU worker check",
        queue="gpu",
        engine="worker.engines.gpu_check.run",
        description="Runs on a GPU worker and reports its CUDA devices, memory, NCCL and each device's bf16 "
        "matmul TFLOP/s: proves a newly added GPU node takes gpu-queue work (docs/deploy.md).",
        form="apps.ops.forms.GPUCheckForm",
        gpus=1,
        routed_by_gpus=True,
    )
)

register(
    JobKind(
        name="rubric_draft",
        label="Draft a rubric with a model",
        queue="cpu",
        engine="worker.engines.rubric_draft.run",
        description="A model drafts a PaperBench rubric tree from a paper's Markdown (and its official code); "
        "refused trees go back with the validator's problems. Saved as the draft and a model-draft version, "
        "never over a curated rubric (docs/research-factory.md).",
        form="apps.papers.forms.RubricDraftConfigForm",
    )
)

register(
    JobKind(
        name="rl",
        label="Progressive RL",
        queue="cpu",
        engine="worker.engines.rl.run",
        routed_by_gpus=True,
        description="KLong's progressive RL: stages with growing rollout timeouts (2 h, 4 h, 6 h), n rollouts "
        "per task split into sub-trajectories, each judged on its submission state; advantage = Q minus the "
        "task's mean; clipped policy-gradient updates; a checkpoint at every stage boundary (docs/rl.md).",
        form="apps.jobs.forms_rl.RLForm",
        # Real runs take days (three stages of 2-6 h rollouts, many iterations): not the 6 h default.
        time_limit_s=14 * 24 * 3600,
    )
)

register(
    JobKind(
        name="distill",
        label="Research-Factory distillation",
        queue="cpu",
        engine="worker.engines.distill.run",
        description="N teacher agent runs per train paper in sandboxes, each final submission judged through the "
        "judge queue; runs scoring at least the threshold (or the top-k per paper) are kept: rejection sampling. "
        "The kept trajectories form a named dataset for SFT (docs/research-factory.md).",
        form="apps.datasets.forms.DistillConfigForm",
        uses_sandboxes=True,
    )
)

register(
    JobKind(
        name="agent_run",
        label="Run an agent on a paper",
        queue="cpu",
        engine="worker.engines.agent_run.run",
        description="One agent (bash, python, read/write/search files, submit) reproduces one paper in a sandbox "
        "with a chosen model endpoint; every turn is recorded live as a trajectory, the submission is snapshotted "
        "at each change and exported for judging (docs/sandboxes-and-agent.md).",
        form="apps.jobs.forms_agent.AgentRunForm",
        uses_sandboxes=True,
        routed_by_gpus=True,
    )
)

# Dataset export (issue 17: no heavy work inside a request). The export page and
# POST /api/trajectories/export-dataset/ check the request and queue it (apps/trajectories/exports.py);
# the zip is the job's downloadable artifact.
register(
    JobKind(
        name="dataset_export",
        label="Export a training dataset",
        queue="cpu",
        engine="worker.engines.dataset_export.run",
        description="Splits the chosen trajectories into training windows and renders each in the tokenizer's "
        "chat format (input_ids + labels) into a zip offered for download on the job page; config: ids (in "
        "export order) and the split options (l_max, ...). Launched from the trajectory list or split page, or "
        "POST /api/trajectories/export-dataset/ (docs/trajectories.md).",
    )
)
