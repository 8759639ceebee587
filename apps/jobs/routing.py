from __future__ import annotations

from django.urls import path

from apps.jobs.consumers import JobConsumer

websocket_urlpatterns = [
    path("ws/jobs/", JobConsumer.as_asgi()),
    path("ws/jobs/<int:job_id>/", JobConsumer.as_asgi()),
]
