"""Which queue a job needing k GPUs goes to, and which queues a worker with N cards serves."""

from __future__ import annotations

import pytest

from apps.jobs.queues import MAX_GPUS, QUEUES, gpu_queue, gpu_queues_for_worker
from klong_site.celery_app import app


def test_a_job_goes_to_the_queue_of_its_gpu_count():
    assert [gpu_queue(k) for k in (0, 1, 2, 8, MAX_GPUS)] == ["cpu", "gpu", "gpu-2", "gpu-8", f"gpu-{MAX_GPUS}"]
    with pytest.raises(ValueError, match=f"at most {MAX_GPUS} GPUs"):
        gpu_queue(MAX_GPUS + 1)


def test_a_worker_serves_every_job_its_cards_can_hold_and_no_bigger_one():
    assert gpu_queues_for_worker(1) == ["gpu"]
    assert gpu_queues_for_worker(3) == ["gpu", "gpu-2", "gpu-3"]
    assert len(gpu_queues_for_worker(64)) == MAX_GPUS  # a bigger node still serves every queue there is
    # Every queue a job can be routed to is declared (task_create_missing_queues is off).
    assert set(QUEUES) == {"cpu", "judge", *gpu_queues_for_worker(MAX_GPUS)}
    assert {q.name for q in app.conf.task_queues} == set(QUEUES)
