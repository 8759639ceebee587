"""The Celery app: the queues of worker/queues.py (cpu, gpu per GPU count, judge), priorities, JSON,
time limits.

Settings come from Django's settings (CELERY_*), so one REDIS_URL drives the broker too.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Exchange, Queue

import worker.broker  # noqa: F401  (a fix for kombu's Redis transport, see there)
from worker.queues import QUEUES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "klong_site.settings")

# DjangoTask gives every task delay_on_commit(), which views use so a worker never looks for a
# row whose transaction has not committed yet.
app = Celery("klong", task_cls="celery.contrib.django.task:DjangoTask")
app.config_from_object("django.conf:settings", namespace="CELERY")

app.conf.task_queues = [Queue(name, Exchange(name), routing_key=name) for name in QUEUES]
app.conf.task_create_missing_queues = False
app.autodiscover_tasks(["worker"])

# Signal handlers, the klong_info control command and the Redis heartbeat, registered with the app;
# the bootstep that subscribes a multi-GPU worker to gpu-2 ... gpu-N.
import worker.heartbeat  # noqa: E402, F401
import worker.sandbox.signals  # noqa: E402, F401
from worker.lifecycle import GPUQueues  # noqa: E402 (also registers the start-up handlers)

app.steps["worker"].add(GPUQueues)
