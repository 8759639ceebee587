"""What a judge run graded: its submission, as a key that pairs runs and as a label for people."""

from __future__ import annotations

from django.db.models import Q

from apps.judging.models import JudgeRun


def submission_key(run: JudgeRun) -> str:
    """What a run graded: its trajectory, else its submission folder, else only itself."""
    if run.trajectory_id:
        return f"trajectory:{run.trajectory_id}"
    return f"submission:{submission_of(run)}"


def submission_of(run: JudgeRun) -> str:
    # A run with neither trajectory nor folder graded something only it knows: human runs made
    # beside it record "run:<pk>" as their submission, so they pair with it.
    return run.submission or f"run:{run.pk}"


def submission_label(run: JudgeRun) -> str:
    if run.trajectory_id and run.trajectory is not None:
        return f"{run.paper.slug} · {run.trajectory.title}"
    return f"{run.paper.slug} · {run.submission or f'run {run.pk}'}"


def same_submission(run: JudgeRun) -> Q:
    """The runs that graded what ``run`` graded."""
    if run.trajectory_id:
        return Q(trajectory_id=run.trajectory_id)
    return Q(trajectory__isnull=True, submission=submission_of(run))
