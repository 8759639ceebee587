"""Checkpoints put to use: a checkpoint registered as a local model endpoint (agents, judges)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apps.jobs.models import ModelCheckpoint
from apps.judging.models import ModelEndpoint


def register_checkpoint_endpoint(checkpoint: ModelCheckpoint, folder: Path, *, name: str = "",
                        params: dict[str, Any] | None = None) -> tuple[ModelEndpoint, bool]:
    """The checkpoint's folder as a local transformers endpoint (``checkpoint-<id>`` unless named);
    returns it and whether it was created now."""
    return ModelEndpoint.objects.get_or_create(
        name=name or f"checkpoint-{checkpoint.pk}",
        defaults={
            "backend": ModelEndpoint.Backend.TRANSFORMERS,
            "model": str(folder),
            "description": f"{checkpoint.name} (from {checkpoint.base_model})",
            "concurrency": 1,
            "params": params or {},
        },
    )
