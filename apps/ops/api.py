"""GET /api/workers/: the workers page as JSON (every worker, answering or known by heartbeat)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from apps.jobs.workers import worker_overview


class WorkerSerializer(serializers.Serializer):
    name = serializers.CharField()
    node = serializers.CharField()
    queues = serializers.ListField(child=serializers.CharField())
    concurrency = serializers.IntegerField(allow_null=True)
    gpus = serializers.ListField(child=serializers.CharField(), allow_null=True)
    docker_host = serializers.CharField()
    sandboxes = serializers.IntegerField(allow_null=True)
    heartbeat_age_s = serializers.FloatField(allow_null=True)
    answered = serializers.BooleanField()
    silent = serializers.BooleanField()
    jobs = serializers.SerializerMethodField()

    def get_jobs(self, row) -> list[int]:
        return [job.pk for job in row.jobs]


class WorkerViewSet(viewsets.ViewSet):
    """Workers on every machine: queues, processes, GPUs, Docker host, sandboxes, last heartbeat,
    running job ids; ``silent`` once one neither answers nor beats."""

    @extend_schema(responses={200: WorkerSerializer(many=True)})
    def list(self, request: Request) -> Response:
        return Response(WorkerSerializer(worker_overview(), many=True).data)
