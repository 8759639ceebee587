"""The Celery app (as cookiecutter-django's config/celery_app.py): the queues of
apps/jobs/queues.py (cpu, gpu per GPU count, judge), priorities, JSON, time limits.

Settings come from Django's settings (CELERY_*), so one REDIS_URL drives the broker too. The web
process only sends tasks by name through it (apps/jobs/services/dispatch.py); workers are started
with ``celery -A klong_site.celery_app worker`` and import worker/tasks.py, where the tasks and the
worker's signal handlers live.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Exchange, Queue

import worker.broker  # noqa: F401 (patches kombu's Redis transport: a worker survives a Redis restart)
from apps.jobs.queues import QUEUES
from worker.bootsteps import GPUQueues

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "klong_site.settings")

# DjangoTask gives every task delay_on_commit().
app = Celery("klong", task_cls="celery.contrib.django.task:DjangoTask")
app.config_from_object("django.conf:settings", namespace="CELERY")

app.conf.task_queues = [Queue(name, Exchange(name), routing_key=name) for name in QUEUES]
app.conf.task_create_missing_queues = False
app.autodiscover_tasks(["worker"])
app.steps["worker"].add(GPUQueues)
