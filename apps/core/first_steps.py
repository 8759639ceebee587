"""The dashboard's first steps: where a new user starts, and one launch per job kind pre-filled for
the demo (its tiny model, dataset, papers and submission), sized to finish in seconds on a CPU."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.urls import reverse

from apps.core.demo import (
    DEMO_ENDPOINT,
    DEMO_MODEL_PATH,
    DEMO_SUBMISSION,
    PAPERS,
    demo_model_folder,
)
from apps.jobs.models import ModelCheckpoint
from apps.papers.models import Paper


@dataclass(frozen=True)
class Step:
    title: str
    url: str
    note: str = ""


def _launch(kind: str, **config: object) -> str:
    return reverse("jobs:launch") + "?" + urlencode({"kind": kind, **config})


def demo_launches() -> list[Step]:
    """A launch of every kind a worker on this machine can run, pre-filled for the demo; none until
    the demo model is registered (``manage.py seed_demo``)."""
    checkpoint = ModelCheckpoint.objects.filter(path=DEMO_MODEL_PATH).first()
    paper = Paper.objects.filter(slug=PAPERS[0].slug).first()
    if checkpoint is None or paper is None:
        return []
    agent = {"max_steps": 3, "time_limit_s": 300, "l_max": 2048, "tool_timeout_s": 30}
    return [
        Step("Prove the worker runs jobs", _launch("selftest", steps=5, delay_s=0.2),
             "A worker self-test: the queue, the worker, the database and the live page together."),
        Step("Fine-tune the demo model", _launch(
            "sft", dataset="demo-distilled", base_model=demo_model_folder(), l_max=4096, max_steps=5, grad_accum=1,
            save_steps=5, precision="fp32", gpus=0),
             "Trajectory-splitting SFT on the demo-distilled dataset: 5 steps on the CPU."),
        Step("Progressive RL from the demo checkpoint", _launch(
            "rl", policy_checkpoint=checkpoint.pk, task_source="toy", toy_tasks=1, stages="20m:1, 40m:1",
            n_rollouts=2, l_max=512, minibatch_size=8, gpus=0),
             "Two stages on the toy task (a programmatic rubric), a checkpoint at each stage's end."),
        Step("Run an agent on a demo paper", _launch(
            "agent_run", paper=paper.slug, endpoint=DEMO_ENDPOINT, reserve_tokens=256, **agent),
             "Three steps of the demo model in a sandbox, recorded live as a trajectory."),
        Step("Judge the demo submission", _launch(
            "judge", paper=paper.slug, endpoint=DEMO_ENDPOINT, submission=DEMO_SUBMISSION, code_only="on"),
             "Its code leaves are graded by commands in a sandbox (the demo rubric's checks)."),
        Step("Distil a dataset by rejection sampling", _launch(
            "distill", papers=paper.slug, teacher=DEMO_ENDPOINT, judge=DEMO_ENDPOINT, runs_per_paper=1,
            threshold=0.5, dataset="my-first-distilled", code_only="on", judge_help_after_s=1, **agent),
             "One teacher run, judged, kept if it scores 0.5 or more."),
        Step("Draft a rubric with a model", _launch(
            "rubric_draft", paper=paper.slug, endpoint=DEMO_ENDPOINT, target_leaves=4, max_attempts=1),
             "The tiny model's draft is refused: the job says what the validator found."),
        Step("Export a training dataset", reverse("trajectories:dataset-export") + "?" + urlencode(
            {"ids": ",".join(str(pk) for pk in paper.trajectories.order_by("pk").values_list("pk", flat=True)),
             "l_max": 2048}),
             "The demo paper's runs as input_ids and labels, with the demo model's tokenizer."),
    ]


def first_steps() -> dict[str, list[Step]]:
    paper = Paper.objects.filter(slug=PAPERS[0].slug).first()
    explore = [
        Step("Open a paper and its rubric tree",
             reverse("papers:detail", args=[paper.slug]) if paper else reverse("papers:list"),
             "PaperBench rubrics: weights, categories, versions, the tree editor."),
        Step("Read a long agent trajectory", reverse("trajectories:list"),
             "Hundreds of turns; each has a Split page with its exact training windows."),
        Step("Compare a model judge with a human grader", reverse("audit:home"),
             "Side by side, leaf by leaf, with the agreement figures."),
    ]
    bring = [
        Step("Bring a real model", reverse("judging:endpoints"),
             "A model folder on the workers (config.json, tokenizer, weights) for training, or an endpoint "
             "(an OpenAI-compatible server or a local folder) for agents and judges: docs/models.md."),
        Step("Import your papers", reverse("papers:import"), "A PaperBench paper folder as a zip, or a rubric JSON."),
        Step("Import your trajectories", reverse("trajectories:upload"), "Inspect AI logs, JSONL, OpenHands, SWE-agent."),
    ]
    return {"explore": explore, "run": demo_launches(), "bring": bring}
