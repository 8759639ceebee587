"""Judging jobs: a submission graded against a rubric, and a judge measured against human grades."""

from __future__ import annotations

from apps.jobs.registry import JobKind, register
from apps.judging.forms import JudgeConfigForm, JudgeEvalConfigForm
from apps.judging.services import judge_priority_for_config

register(JobKind(
    name="judge",
    label="Judge a submission",
    queue="judge",
    engine="worker.engines.judge.run",
    priority_for=judge_priority_for_config,
    description="Grades a submission against a paper's rubric version leaf by leaf with a model "
    "endpoint (PaperBench's protocol); stores every prompt, answer, token count and cost. Eval-split "
    "papers are queued at priority 0 and train-split ones at 9 (apps.judging.services.request_judge_run).",
    form=JudgeConfigForm,
))

register(JobKind(
    name="judge_eval",
    label="JudgeEval: judge vs human grades",
    queue="judge",
    engine="worker.engines.judge_eval.run",
    description="Runs a judge over a human-graded PaperBench tree and reports accuracy and macro "
    "precision/recall/F1 over leaves, overall and per category (as `manage.py judge_eval`).",
    form=JudgeEvalConfigForm,
))
