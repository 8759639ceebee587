"""The worker bootstep that subscribes a multi-GPU worker to the queues of the jobs it can take.

klong_site/celery_app.py adds it to the app when the app is created, before Django is set up: so
nothing here imports a model (settings are read when the worker starts).
"""

from __future__ import annotations

from celery import bootsteps
from django.conf import settings

from apps.jobs.queues import gpu_queues_for_worker


class GPUQueues(bootsteps.Step):
    """A worker on the gpu queue with KLONG_WORKER_GPUS = N also consumes gpu-2 ... gpu-N.

    A worker bootstep, because its __init__ runs after ``-Q`` has chosen the queues and before the
    consumer subscribes (a ``celeryd_after_setup`` handler runs before ``-Q`` and is overwritten).
    """

    def __init__(self, worker, **kwargs) -> None:
        queues = worker.app.amqp.queues
        if "gpu" in queues.consume_from:
            for name in gpu_queues_for_worker(settings.KLONG_WORKER_GPUS)[1:]:
                queues.select_add(queues[name])
        super().__init__(worker, **kwargs)

