"""Checkpoints over the API: list with lineage, and download as a zip (for training clusters that
pull a model trained here; see apps/client)."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request

from apps.jobs.checkpoints import checkpoint_zip_response
from apps.jobs.models import ModelCheckpoint


class CheckpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelCheckpoint
        fields = [
            "id", "job", "name", "path", "base_model", "method", "dataset_hash", "manifest_hashes",
            "trajectory_ids", "config", "metrics", "created_at",
        ]
        read_only_fields = fields


class CheckpointViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Trained checkpoints with their lineage; ``download`` answers the model folder as a zip."""

    serializer_class = CheckpointSerializer
    queryset = ModelCheckpoint.objects.all()

    @extend_schema(responses={(200, "application/zip"): bytes})
    @action(detail=True, methods=["get"])
    def download(self, request: Request, pk: str | None = None) -> StreamingHttpResponse:
        return checkpoint_zip_response(self.get_object())
