"""Recount the tokens of trajectories with the configured tokenizer (KLONG_TOKENIZER_PATH).

Config: ``trajectories`` (a list of ids), or none to recount every trajectory whose counts came
from another tokenizer or the estimate. Same service as the import, one trajectory at a time.
"""

from __future__ import annotations

from typing import Any

from apps.jobs.models import Job
from apps.jobs.progress import Progress
from apps.trajectories.models import Trajectory
from apps.trajectories.services import recount_tokens, token_counter


def run(job: Job, progress: Progress) -> dict[str, Any]:
    counter = token_counter()
    ids = job.config.get("trajectories")
    queryset = Trajectory.objects.filter(pk__in=ids) if ids else Trajectory.objects.exclude(tokenizer=counter.name)
    todo = list(queryset.order_by("pk").values_list("pk", flat=True))
    progress.log(f"Counting {len(todo)} trajectories with {counter.name or 'the estimate (chars / 4)'}")
    tokens = 0
    for done, pk in enumerate(todo, start=1):
        trajectory = recount_tokens(Trajectory.objects.get(pk=pk), counter)
        tokens += trajectory.total_tokens
        progress.update(done / len(todo), f"{done} of {len(todo)} trajectories")
    return {"trajectories": len(todo), "tokens": tokens, "tokenizer": counter.name}
