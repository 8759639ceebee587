from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.jobs.downloads import artifact_download
from apps.jobs.models import Job, JobArtifact, JobMetric
from apps.jobs.registry import KINDS
from apps.jobs.services.control import cancel_job, retry_job
from apps.jobs.services.launching import launch_job
from apps.jobs.services.pipelines import launch_pipeline


class JobSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)
    eta_s = serializers.FloatField(read_only=True, allow_null=True,
                                   help_text="Seconds left at the pace of the run's recent steps; null until known.")
    title = serializers.CharField(max_length=300, required=False, allow_blank=True)
    priority = serializers.IntegerField(min_value=0, max_value=9, default=5)
    time_limit_s = serializers.IntegerField(min_value=1, required=False, allow_null=True)

    class Meta:
        model = Job
        fields = [
            "id", "kind", "title", "state", "config", "config_version", "parent", "queue", "priority", "gpus",
            "time_limit_s", "progress", "step", "total_steps", "stage", "eta_s", "message", "error", "result", "worker",
            "attempt", "created_by", "created_at", "started_at", "finished_at",
        ]
        read_only_fields = [
            "id", "state", "config_version", "parent", "queue", "gpus", "progress", "step", "total_steps",
            "stage", "eta_s", "message", "error", "result", "worker", "attempt", "created_by", "created_at",
            "started_at", "finished_at",
        ]

    def validate_kind(self, value: str) -> str:
        if value not in KINDS:
            raise serializers.ValidationError(f"Unknown job kind; known: {', '.join(sorted(KINDS))}.")
        return value


class JobArtifactSerializer(serializers.ModelSerializer):
    download = serializers.SerializerMethodField(help_text="Where to download the file; null when it is not offered.")

    class Meta:
        model = JobArtifact
        fields = ["id", "name", "kind", "size_bytes", "meta", "created_at", "download"]
        read_only_fields = fields

    def get_download(self, artifact: JobArtifact) -> str | None:
        if not artifact.downloadable:
            return None
        return self.context["request"].build_absolute_uri(
            reverse("job-artifact-download", args=[artifact.job_id, artifact.pk]))


class PipelineSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=300, required=False, allow_blank=True)
    priority = serializers.IntegerField(min_value=0, max_value=9, default=5)
    stages = serializers.ListField(child=serializers.DictField(), min_length=1, max_length=20)


class JobMetricSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobMetric
        fields = ["step", "name", "value"]
        read_only_fields = fields


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    """Jobs: list, read, launch (operators) and cancel (operators)."""

    serializer_class = JobSerializer
    write_permission = {"create": "launch_jobs", "cancel": "cancel_jobs", "retry": "launch_jobs", "pipeline": "launch_jobs"}

    def get_queryset(self):
        queryset = Job.objects.select_related("created_by")
        state = self.request.query_params.get("state")
        return queryset.filter(state=state) if state else queryset

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        job = launch_job(
            data["kind"], data.get("config") or {}, request.user,
            title=data.get("title", ""), priority=data.get("priority", 5),
            time_limit_s=data.get("time_limit_s"),
        )
        return Response(self.get_serializer(job).data, status=status.HTTP_202_ACCEPTED)

    @action(detail=False, methods=["post"], serializer_class=PipelineSerializer)
    def pipeline(self, request):
        """Launch several stages as one job: ``{"title": ..., "stages": [{"kind": ..., "config": {...}}]}``."""
        serializer = PipelineSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        job = launch_pipeline(data["stages"], request.user, title=data.get("title", ""), priority=data["priority"])
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        job = retry_job(self.get_object(), request.user)
        return Response(self.get_serializer(job).data, status=status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = cancel_job(self.get_object())
        return Response(self.get_serializer(job).data)

    @action(detail=True, methods=["get"])
    def artifacts(self, request, pk=None):
        """What the job produced; ``download`` is set on the files it offers (a dataset export's zip)."""
        artifacts = self.get_object().artifacts.all()
        return Response(JobArtifactSerializer(artifacts, many=True, context={"request": request}).data)

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], url_path=r"artifacts/(?P<artifact>[0-9]+)/download")
    def artifact_download(self, request, pk=None, artifact: str = ""):
        """The artifact's file, streamed (404 for one not offered for download)."""
        return artifact_download(get_object_or_404(self.get_object().artifacts.all(), pk=artifact))

    @action(detail=True, methods=["get"])
    def metrics(self, request, pk=None):
        job = self.get_object()
        return Response(JobMetricSerializer(job.metrics.all(), many=True).data)
