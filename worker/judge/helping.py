"""Judge jobs that a job waiting on them runs itself when no judge worker takes them.

Distillation and RL queue a judge job per submission and wait. On a single-worker install the
only worker is busy with that very job, so the judge jobs would wait forever. After a grace
period the waiting job runs the most urgent of its own queued judge jobs in-line, unless a more
urgent judge job (an eval paper's) is waiting for a judge worker: then it leaves the queue
alone. The judge task claims its job with a conditional update, so a job runs once, here or on
a judge worker, whichever claims it first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from apps.jobs.models import Job
from worker.tasks import run_job


def help_with_queued_judge(pending: Iterable[int], waited_s: Callable[[int], float], help_after_s: float) -> int | None:
    """Run one of ``pending`` (judge job ids) here if it has waited ``help_after_s``; its id, or None."""

    for queued in Job.objects.filter(pk__in=list(pending), state=Job.State.QUEUED).order_by("priority", "pk"):
        if waited_s(queued.pk) < help_after_s:
            continue
        if Job.objects.filter(kind="judge", state=Job.State.QUEUED, priority__lt=queued.priority).exists():
            return None
        run_job(queued.pk)
        return queued.pk
    return None
