from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.core.parsers import FormParser, JSONParser, MultiPartParser
from apps.judging.models import JudgeRun, LeafGrade, ModelEndpoint, RubricCheck, endpoint_field_errors
from apps.judging.services import (
    check_endpoint_connection,
    request_judge_run,
    run_graded_tree,
    store_submission_upload,
    submission_folder,
    validate_check_leaf,
)
from apps.papers.models import Paper


class ModelEndpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelEndpoint
        fields = [
            "id", "name", "backend", "base_url", "model", "api_key_env", "params", "price_input_per_m",
            "price_output_per_m", "concurrency", "timeout_s", "max_retries", "description", "last_test_at",
            "last_test_ok", "last_test_message", "created_at", "updated_at",
        ]
        read_only_fields = ["id", "last_test_at", "last_test_ok", "last_test_message", "created_at", "updated_at"]
        extra_kwargs = {"params": {"help_text": "Default request options: a JSON object of generation options."}}

    def validate(self, attrs):
        values = {name: attrs.get(name, getattr(self.instance, name, default))
                  for name, default in (("backend", ModelEndpoint.Backend.OPENAI), ("base_url", ""),
                                        ("api_key_env", ""), ("params", {}), ("max_retries", None))}
        errors = endpoint_field_errors(**values)
        # A PATCH is held to the rules for what it changes (and the URL when it changes the
        # backend): a row saved before a rule existed can still be edited, and is refused when used.
        checked = set(attrs) | ({"base_url"} if "backend" in attrs or self.instance is None else set())
        errors = {name: message for name, message in errors.items() if name in checked}
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class ModelEndpointViewSet(viewsets.ModelViewSet):
    """Stored model endpoints (the key stays in the worker's environment) and a connection test."""

    serializer_class = ModelEndpointSerializer
    queryset = ModelEndpoint.objects.all()
    lookup_field = "name"
    write_permission = "launch_jobs"

    @action(detail=True, methods=["post"], url_path="test-connection")
    def test_connection(self, request, name=None):
        """200 with the outcome ({"ok", "message", ...}); 400 with the reason when the endpoint as
        configured cannot be tested (URL, key variable, params, or a URL that redirects elsewhere)."""
        result = check_endpoint_connection(self.get_object())
        return Response(result.as_dict(), status=status.HTTP_400_BAD_REQUEST if result.refused else status.HTTP_200_OK)


class JudgeRunSerializer(serializers.ModelSerializer):
    paper = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    endpoint = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = JudgeRun
        fields = [
            "id", "paper", "trajectory", "rubric_version", "rubric_hash", "kind", "judge_name", "score", "created_at",
            "job", "endpoint", "endpoint_snapshot", "settings", "code_only", "split", "submission", "n_leaves",
            "n_invalid", "calls", "prompt_tokens", "completion_tokens", "cost_usd", "duration_s",
        ]
        read_only_fields = fields


class JudgeRunDetailSerializer(JudgeRunSerializer):
    class Meta(JudgeRunSerializer.Meta):
        fields = [*JudgeRunSerializer.Meta.fields, "node_scores"]
        read_only_fields = fields


class LeafGradeSerializer(serializers.ModelSerializer):
    class Meta:
        model = LeafGrade
        fields = [
            "node_index", "node_id", "category", "score", "valid_score", "invalid_reason", "explanation", "prompt",
            "response", "responses", "files", "calls", "prompt_tokens", "completion_tokens", "cost_usd", "latency_s",
        ]
        read_only_fields = fields


class JudgeRequestSerializer(serializers.Serializer):
    paper = serializers.SlugRelatedField(slug_field="slug", queryset=Paper.objects.all())
    endpoint = serializers.SlugRelatedField(slug_field="name", queryset=ModelEndpoint.objects.all())
    rubric_version = serializers.IntegerField(required=False, help_text="Version number; default the latest.")
    submission = serializers.CharField(required=False, help_text="A stored submission folder (submissions/<id>).")
    upload = serializers.FileField(required=False, help_text="Or a tar/zip of the submission folder.")
    code_only = serializers.BooleanField(default=False)

    def validate(self, attrs):
        if bool(attrs.get("submission")) == bool(attrs.get("upload")):
            raise serializers.ValidationError("Give either submission (a stored folder) or upload (a tar/zip).")
        return attrs


class JudgeRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                      viewsets.GenericViewSet):
    """Judge runs; POST queues a judge job (eval-split papers first) and answers 202 with the job."""

    queryset = JudgeRun.objects.select_related("paper", "endpoint")
    write_permission = {"create": "launch_jobs"}
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def get_serializer_class(self):
        if self.action == "create":
            return JudgeRequestSerializer
        return JudgeRunDetailSerializer if self.action == "retrieve" else JudgeRunSerializer

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        paper = data["paper"]
        version = None
        if data.get("rubric_version") is not None:
            version = paper.rubric_versions.filter(number=data["rubric_version"]).first()
            if version is None:
                return Response({"rubric_version": "No such version."}, status=status.HTTP_400_BAD_REQUEST)
        if data.get("upload") is not None:
            submission = store_submission_upload(data["upload"])
        else:
            submission = data["submission"]
            submission_folder(submission)
        job = request_judge_run(paper=paper, endpoint=data["endpoint"], submission=submission, user=request.user,
                                version=version, code_only=data["code_only"])
        return Response(
            {"job": job.pk, "priority": job.priority, "queue": job.queue, "submission": submission},
            status=status.HTTP_202_ACCEPTED,
        )

    @action(detail=True, methods=["get"], url_path="graded-tree")
    def graded_tree(self, request, pk=None):
        """The run as a PaperBench graded tree; inner nodes are invalid when a leaf below is."""
        # get_object, not Django's get_object_or_404: a pk that is not a number is a 404, not a 500.
        return Response(run_graded_tree(self.get_object()))

    @action(detail=True, methods=["get"])
    def grades(self, request, pk=None):
        page = self.paginate_queryset(self.get_object().grades.all())
        return self.get_paginated_response(LeafGradeSerializer(page, many=True).data)


class RubricCheckSerializer(serializers.ModelSerializer):
    paper = serializers.SlugRelatedField(slug_field="slug", queryset=Paper.objects.all())
    # The model's own validators: DRF would turn the callable maximum into a max_value it cannot print.
    timeout_s = serializers.FloatField(required=False, validators=RubricCheck._meta.get_field("timeout_s").validators)

    class Meta:
        model = RubricCheck
        fields = ["id", "paper", "node_id", "command", "timeout_s", "created_at"]
        read_only_fields = ["id", "created_at"]

    def validate(self, attrs):
        paper = attrs.get("paper") or self.instance.paper
        node_id = attrs.get("node_id") or self.instance.node_id
        try:
            validate_check_leaf(paper, node_id)
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"node_id": exc.messages}) from None
        return attrs


class RubricCheckViewSet(viewsets.ModelViewSet):
    """Programmatic leaves: a command run in the submission's sandbox grades the leaf (exit 0 = pass)."""

    serializer_class = RubricCheckSerializer
    write_permission = "edit_rubrics"

    def get_queryset(self):
        checks = RubricCheck.objects.select_related("paper")
        paper = self.request.query_params.get("paper")
        return checks.filter(paper__slug=paper) if paper else checks

    def perform_create(self, serializer):
        serializer.save(created_by=self.request.user)
