from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from apps.jobs.models import Job
from apps.jobs.progress import Progress
from apps.trajectories.models import Trajectory
from tests.trajectories.factories import klong_jsonl
from tests.trajectories.test_import import TURNS
from worker.engines.trajectory_import import run

pytestmark = pytest.mark.django_db


def _job(config: dict) -> Job:
    return Job.objects.create(kind="trajectory_import", title="import", config=config)


def test_the_import_job_imports_the_staged_file_and_removes_it():
    folder = Path(settings.DATA_DIR) / "imports" / "abc"
    folder.mkdir(parents=True, exist_ok=True)
    path = klong_jsonl(folder / "runs.jsonl", [TURNS, TURNS])
    job = _job({"path": str(path), "skip_bad": False, "cleanup": str(folder)})
    result = run(job, Progress(job.pk))
    assert [t["turns"] for t in result["trajectories"]] == [4, 4]
    assert Trajectory.objects.count() == 2 and not folder.exists()


def test_the_import_job_refuses_a_path_outside_the_import_folder(tmp_path):
    path = klong_jsonl(tmp_path / "runs.jsonl", [TURNS])
    job = _job({"path": str(path)})
    with pytest.raises(ValueError, match="must be inside"):
        run(job, Progress(job.pk))
    assert Trajectory.objects.count() == 0


def test_the_token_job_recounts_estimated_trajectories_with_the_tokenizer(settings, tmp_path):
    from apps.trajectories.tokens import counter_for
    from tests.trajectories.factories import make_trajectory, tiny_tokenizer
    from worker.engines.trajectory_tokens import run as count

    trajectory = make_trajectory(10)
    settings.KLONG_TOKENIZER_PATH = str(tiny_tokenizer(tmp_path / "tok"))
    counter_for.cache_clear()
    job = Job.objects.create(kind="trajectory_tokens", title="count", config={})
    result = count(job, Progress(job.pk))
    trajectory.refresh_from_db()
    assert result["trajectories"] == 1 and trajectory.tokenizer == "tok"
    assert trajectory.total_tokens == sum(trajectory.turns.values_list("token_count", flat=True)) == result["tokens"]
