"""Datasets: create one from chosen trajectories (by hand or from a distillation job)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction

from apps.core.domain import Invalid
from apps.datasets.models import Dataset
from apps.trajectories.models import Trajectory


class DatasetError(Invalid, ValueError):
    """A dataset that cannot be made as asked (name taken, unknown trajectories)."""


def check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise DatasetError("A dataset needs a name.")
    if Dataset.objects.filter(name=name).exists():
        raise DatasetError(f"A dataset named {name!r} already exists.")
    return name


@transaction.atomic
def create_dataset(name: str, trajectory_ids: Iterable[int], *, user=None, origin_job=None,
                   threshold: float | None = None, top_k: int | None = None, notes: str = "",
                   stats: dict[str, Any] | None = None) -> Dataset:
    ids = sorted(set(int(i) for i in trajectory_ids))
    found = set(Trajectory.objects.filter(pk__in=ids).values_list("pk", flat=True))
    missing = [i for i in ids if i not in found]
    if missing:
        raise DatasetError(f"No trajectories with ids {', '.join(map(str, missing[:10]))}.")
    dataset = Dataset.objects.create(
        name=check_name(name), origin_job=origin_job, threshold=threshold, top_k=top_k, notes=notes,
        stats=stats or {}, created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    dataset.trajectories.set(ids)
    return dataset
