from __future__ import annotations

from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: Prometheus metrics, the GPU worker check, shared files. No models."""

    name = "apps.ops"
    label = "ops"
