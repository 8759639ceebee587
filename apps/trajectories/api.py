from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.parsers import FormParser, MultiPartParser
from apps.core.permissions import RolePermission
from apps.papers.models import Paper
from apps.trajectories import exports, services
from apps.trajectories.models import AnnotationLabel, Trajectory, TurnAnnotation
from apps.trajectories.queries import filter_trajectories, search_turns, trajectory_rows, turn_texts
from apps.trajectories.uploads import check_request_size, import_upload

TURN_CHUNK_MAX = 500


class TrajectorySerializer(serializers.ModelSerializer):
    paper = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Trajectory
        fields = [
            "id", "paper", "title", "source", "source_format", "model_name", "scaffold", "task", "source_name",
            "started_at", "ended_at", "wall_time_s", "end_state", "final_score", "policy_version", "turn_count",
            "total_tokens", "tokenizer", "prefix_end", "review", "review_reason", "reviewed_at", "created_at",
            "live",
        ]
        read_only_fields = fields


class ImportSerializer(serializers.Serializer):
    file = serializers.FileField()
    paper = serializers.SlugRelatedField(slug_field="slug", queryset=Paper.objects.all(), required=False)
    skip_bad = serializers.BooleanField(default=False)


class ReviewSerializer(serializers.Serializer):
    review = serializers.ChoiceField(choices=[("", "clear"), *Trajectory.Review.choices], allow_blank=True)
    reason = serializers.CharField(allow_blank=True, default="")


class PrefixSerializer(serializers.Serializer):
    prefix_end = serializers.IntegerField(min_value=-1, allow_null=True)


class NoLossSerializer(serializers.Serializer):
    turn = serializers.IntegerField(min_value=0)
    no_loss = serializers.BooleanField()


class AnnotationSerializer(serializers.ModelSerializer):
    label = serializers.SlugRelatedField(slug_field="name", queryset=AnnotationLabel.objects.all())
    author = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = TurnAnnotation
        fields = ["id", "trajectory", "turn_index", "label", "note", "author", "created_at"]
        read_only_fields = ["id", "trajectory", "author", "created_at"]


class TrajectoryViewSet(viewsets.ReadOnlyModelViewSet):
    """Trajectories: list (with the page's filters as query parameters), detail, turns in
    chunks, search, import (multipart), review, no-loss marks and annotations."""

    serializer_class = TrajectorySerializer
    permission_classes = [RolePermission]
    write_permission = {
        "import_file": "edit_papers", "export_dataset": "view_studio", "review": "grade", "prefix": "grade", "no_loss": "grade", "annotations": "grade",
    }

    def get_queryset(self):
        # Only the list reads the filters: ?q= on the search action is the search text.
        if self.action == "list":
            return filter_trajectories(trajectory_rows(), self._filters())
        return Trajectory.objects.select_related("paper")

    def _filters(self) -> dict[str, Any]:
        params = self.request.query_params
        values: dict[str, Any] = {k: params.get(k) for k in ("q", "source", "model", "end_state", "review", "sort")}
        if params.get("paper"):
            values["paper"] = Paper.objects.filter(slug=params["paper"]).first() or -1
        for name, cast in (("score_min", float), ("score_max", float), ("turns_min", int), ("turns_max", int)):
            try:
                values[name] = cast(params[name]) if params.get(name) not in (None, "") else None
            except ValueError:
                raise serializers.ValidationError({name: "not a number"}) from None
        return values

    @extend_schema(responses={200: dict})
    @action(detail=True, methods=["get"])
    def turns(self, request: Request, pk: str | None = None) -> Response:
        """Turns ``start`` to ``end`` (exclusive, at most 500) with their full text."""
        trajectory = self.get_object()
        try:
            start = max(0, int(request.query_params.get("start", 0)))
            end = int(request.query_params.get("end", start + 100))
        except ValueError:
            return Response({"detail": "start and end must be integers"}, status=400)
        end = min(end, start + TURN_CHUNK_MAX)
        return Response({"start": start, "turns": turn_texts(trajectory, start, end)})

    @extend_schema(responses={200: dict})
    @action(detail=True, methods=["get"])
    def search(self, request: Request, pk: str | None = None) -> Response:
        """Indices of the turns whose text, reasoning or tool calls contain ``q`` (any case)."""
        return Response({"q": request.query_params.get("q", ""),
                         "turns": search_turns(self.get_object(), request.query_params.get("q", ""))})

    @extend_schema(request=ImportSerializer, responses={201: dict, 202: dict, 400: dict, 413: dict})
    @action(detail=False, methods=["post"], url_path="import", parser_classes=[MultiPartParser, FormParser])
    def import_file(self, request: Request) -> Response:
        """Upload a trajectory file (any supported format). 201 with the new ids, 202 with a
        job id for a large file, 400 with the bad record's position, 413 above the size limit."""
        check_request_size(request._request)
        serializer = ImportSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        outcome = import_upload(
            serializer.validated_data["file"], paper=serializer.validated_data.get("paper"),
            skip_bad=serializer.validated_data["skip_bad"], user=request.user,
        )
        if outcome.job is not None:
            return Response({"job": outcome.job.pk}, status=status.HTTP_202_ACCEPTED)
        return Response(outcome.result.as_dict(), status=status.HTTP_201_CREATED)

    @extend_schema(request=dict, responses={202: dict, 400: dict, 429: dict})
    @action(detail=False, methods=["post"], url_path="export-dataset")
    def export_dataset(self, request: Request) -> Response:
        """Queue a training dataset export of ``ids`` (comma-separated) or of the accepted trajectories
        matching the list filters; split config fields (l_max, overlap_turns, ...) and train_on_reasoning
        (true/false; left out, the chat format decides) as in the split view.
        202 with the job id: when the job has succeeded, its artifact (``GET /api/jobs/ID/artifacts/``)
        is the zip (dataset.jsonl with input_ids + labels, manifest.json)."""
        if not isinstance(request.data, Mapping):
            return Response({"detail": "The body must be a JSON object: {\"ids\": \"1,2\", \"l_max\": ...}."},
                            status=400)
        job = exports.launch_dataset_export(request.data, request.user)
        return Response({"job": job.pk, "trajectories": len(job.config["ids"])}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=ReviewSerializer, responses={200: TrajectorySerializer})
    @action(detail=True, methods=["post"])
    def review(self, request: Request, pk: str | None = None) -> Response:
        """Accept or reject the trajectory for training datasets (a rejection needs a reason)."""
        trajectory = self.get_object()
        serializer = ReviewSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.review_trajectory(trajectory, serializer.validated_data["review"],
                                   serializer.validated_data["reason"], request.user)
        return Response(TrajectorySerializer(trajectory).data)

    @extend_schema(request=PrefixSerializer, responses={200: TrajectorySerializer})
    @action(detail=True, methods=["post"])
    def prefix(self, request: Request, pk: str | None = None) -> Response:
        """Pin the split's prefix up to a turn (null: back to the automatic rule)."""
        trajectory = self.get_object()
        serializer = PrefixSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.set_prefix_end(trajectory, serializer.validated_data["prefix_end"])
        return Response(TrajectorySerializer(trajectory).data)

    @extend_schema(request=NoLossSerializer, responses={200: dict})
    @action(detail=True, methods=["post"], url_path="no-loss")
    def no_loss(self, request: Request, pk: str | None = None) -> Response:
        """Mark a turn as carrying no loss (the split keeps it in context, untrained)."""
        trajectory = self.get_object()
        serializer = NoLossSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        turn = services.set_no_loss(trajectory, serializer.validated_data["turn"], serializer.validated_data["no_loss"])
        return Response({"turn": turn.index, "no_loss": turn.no_loss})

    @extend_schema(request=AnnotationSerializer, responses={200: AnnotationSerializer(many=True)})
    @action(detail=True, methods=["get", "post"])
    def annotations(self, request: Request, pk: str | None = None) -> Response:
        """The trajectory's turn annotations (``?label=`` filters); POST adds one."""
        trajectory = self.get_object()
        if request.method == "POST":
            serializer = AnnotationSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            data = serializer.validated_data
            annotation = services.annotate_turn(
                trajectory, data["turn_index"], data["label"], data.get("note", ""), request.user
            )
            return Response(AnnotationSerializer(annotation).data, status=201)
        rows = trajectory.annotations.select_related("label", "author")
        if label := request.query_params.get("label"):
            rows = rows.filter(label__name=label)
        return Response(AnnotationSerializer(rows, many=True).data)


class AnnotationLabelSerializer(serializers.ModelSerializer):
    class Meta:
        model = AnnotationLabel
        fields = ["id", "name", "color", "description"]


class AnnotationLabelViewSet(
    mixins.ListModelMixin, mixins.CreateModelMixin, mixins.UpdateModelMixin, viewsets.GenericViewSet
):
    """The editable set of annotation labels."""

    serializer_class = AnnotationLabelSerializer
    permission_classes = [RolePermission]
    write_permission = "grade"
    queryset = AnnotationLabel.objects.all()
