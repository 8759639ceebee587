from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.jobs.models import Job, JobMetric
from apps.jobs.services import cancel_job, launch_job
from worker.engines import KINDS


class JobSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)

    class Meta:
        model = Job
        fields = [
            "id", "kind", "title", "state", "config", "queue", "priority", "progress", "message",
            "error", "result", "worker", "created_by", "created_at", "started_at", "finished_at",
        ]
        read_only_fields = [
            "id", "title", "state", "queue", "progress", "message", "error", "result", "worker",
            "created_by", "created_at", "started_at", "finished_at",
        ]

    def validate_kind(self, value: str) -> str:
        if value not in KINDS:
            raise serializers.ValidationError(f"Unknown job kind; known: {', '.join(sorted(KINDS))}.")
        return value


class JobMetricSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobMetric
        fields = ["step", "name", "value"]
        read_only_fields = fields


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    """Jobs: list, read, launch (operators) and cancel (operators)."""

    serializer_class = JobSerializer
    write_permission = {"create": "launch_jobs", "cancel": "cancel_jobs"}

    def get_queryset(self):
        queryset = Job.objects.select_related("created_by")
        state = self.request.query_params.get("state")
        return queryset.filter(state=state) if state else queryset

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            job = launch_job(data["kind"], data.get("config") or {}, request.user, priority=data.get("priority", 5))
        except DjangoValidationError as exc:
            return Response(exc.message_dict, status=status.HTTP_400_BAD_REQUEST)
        return Response(self.get_serializer(job).data, status=status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        try:
            job = cancel_job(self.get_object())
        except DjangoValidationError as exc:
            return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_409_CONFLICT)
        return Response(self.get_serializer(job).data)

    @action(detail=True, methods=["get"])
    def metrics(self, request, pk=None):
        job = self.get_object()
        return Response(JobMetricSerializer(job.metrics.all(), many=True).data)
