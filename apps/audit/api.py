"""Judge audit API: comparisons, human grades, JudgeEval import, audit queues, judge reports, what-if.

Each action validates with a serializer and calls the same service as the pages.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.audit.agreement import VERDICT_METRICS
from apps.audit.models import AuditQueue
from apps.audit.services.comparison import build_comparison, parse_run_ids
from apps.audit.services.exports import comparison_csv, comparison_json, report_csv
from apps.audit.services.grading import MAX_NOTE_CHARS, grade_leaf, own_human_run, undo_grade
from apps.audit.services.judge_eval_import import import_judge_eval, read_upload
from apps.audit.services.queues import create_queue, queue_progress, reassign_items
from apps.audit.services.report import ReportRequest, judge_names, judge_report
from apps.audit.services.what_if import what_if, what_if_tree
from apps.core.parsers import FormParser, JSONParser, MultiPartParser
from apps.judging.models import JudgeRun
from apps.papers.models import Paper


class HumanGradeSerializer(serializers.Serializer):
    run = serializers.PrimaryKeyRelatedField(queryset=JudgeRun.objects.select_related("rubric_version"),
                                             help_text="The compared run whose submission and rubric are graded.")
    node_index = serializers.IntegerField(min_value=0)
    score = serializers.ChoiceField(choices=[0, 1])
    note = serializers.CharField(required=False, allow_blank=True, max_length=MAX_NOTE_CHARS, default="")


class GradeValueSerializer(serializers.Serializer):
    score = serializers.ChoiceField(choices=[0, 1])
    note = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, max_length=MAX_NOTE_CHARS,
                                 default="")


class UndoGradeSerializer(serializers.Serializer):
    run = serializers.PrimaryKeyRelatedField(queryset=JudgeRun.objects.select_related("rubric_version"),
                                             help_text="The compared run the grade was saved against.")
    node_index = serializers.IntegerField(min_value=0)
    saved = GradeValueSerializer(help_text="The grade you saved and now undo (refused with 409 if it changed since).")
    previous = GradeValueSerializer(allow_null=True, help_text="The grade before it, or null: no grade (the leaf reopens).")


class JudgeEvalImportSerializer(serializers.Serializer):
    paper = serializers.SlugRelatedField(slug_field="slug", queryset=Paper.objects.all())
    file = serializers.FileField(help_text="A PaperBench judge_eval JSON file (human grades on every leaf).")


class JudgeReportSerializer(serializers.Serializer):
    reference = serializers.CharField(max_length=200)
    candidate = serializers.CharField(max_length=200)
    papers = serializers.CharField(required=False, allow_blank=True, default="", help_text="Paper slugs, comma-separated.")
    metric = serializers.ChoiceField(choices=VERDICT_METRICS, default="kendall")
    threshold = serializers.FloatField(default=0.8, min_value=-1.0, max_value=1.0)
    n_resamples = serializers.IntegerField(default=1000, min_value=0, max_value=10_000)
    confidence = serializers.FloatField(default=0.95, min_value=0.5, max_value=0.999)
    seed = serializers.IntegerField(default=0)

    def validate_papers(self, value: str) -> list[Paper]:
        slugs = [s.strip() for s in value.split(",") if s.strip()]
        papers = list(Paper.objects.filter(slug__in=slugs))
        missing = sorted(set(slugs) - {p.slug for p in papers})
        if missing:
            raise serializers.ValidationError(f"No paper {missing[0]!r}.")
        return papers


class RubricWhatIfSerializer(serializers.Serializer):
    paper = serializers.SlugRelatedField(slug_field="slug", queryset=Paper.objects.all())
    version = serializers.CharField(required=False, allow_blank=True, default="draft",
                                    help_text="A version number or 'draft'.")
    tree = serializers.JSONField(required=False, help_text="Or an unsaved PaperBench tree (POST).")


class AuditViewSet(viewsets.GenericViewSet):
    """Side-by-side comparison of score sources, human grading, JudgeEval import, reports, what-if."""

    queryset = JudgeRun.objects.none()
    serializer_class = HumanGradeSerializer
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    write_permission = {"grades": "grade", "undo_grade": "grade", "import_judge_eval": "grade", "what_if": "view_studio"}

    @extend_schema(parameters=[OpenApiParameter("runs", str, required=True, description="Run ids, comma-separated"),
                               OpenApiParameter("export", str, enum=["csv"], description="csv: a CSV file")],
                   responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"])
    def compare(self, request):
        """?runs=ID,ID,...: one tree, a column per run; ``export=csv`` for CSV."""
        comparison = build_comparison(parse_run_ids(request.query_params.get("runs")))
        if request.query_params.get("export") == "csv":
            return _csv(comparison_csv(comparison), f"compare-{'-'.join(map(str, comparison.run_ids))}.csv")
        return Response(comparison_json(comparison))

    @extend_schema(request=HumanGradeSerializer, responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["post"])
    def grades(self, request):
        """Save the caller's own 0/1 grade (and note) of one leaf; a judge's grade is never changed."""
        serializer = HumanGradeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        grade = grade_leaf(base=data["run"], node_index=data["node_index"], score=data["score"],
                           note=data["note"], user=request.user)
        return Response(grade_json(grade), status=status.HTTP_201_CREATED)

    @extend_schema(request=UndoGradeSerializer, responses={200: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["post"], url_path="grades/undo")
    def undo_grade(self, request):
        """Undo the caller's last save of one leaf: the grade before it comes back (or none)."""
        serializer = UndoGradeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        previous = data["previous"]
        grade = undo_grade(base=data["run"], node_index=data["node_index"], user=request.user,
                           saved=(data["saved"]["score"], data["saved"]["note"]),
                           previous=(previous["score"], previous["note"]) if previous else None)
        if grade is None:
            mine = own_human_run(data["run"], request.user)
            return Response({"removed": True, "node_index": data["node_index"], "root_score": mine.score})
        return Response(grade_json(grade))

    @extend_schema(request=JudgeEvalImportSerializer, responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["post"], url_path="import-judge-eval")
    def import_judge_eval(self, request):
        serializer = JudgeEvalImportSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data["file"]
        result = import_judge_eval(paper=serializer.validated_data["paper"], data=read_upload(upload),
                                   filename=upload.name, user=request.user)
        return Response({"run": result.run.pk, "rubric_version": result.version.number,
                         "created_version": result.created_version, "score": result.run.score,
                         "match": result.match, "unmatched": result.unmatched}, status=status.HTTP_201_CREATED)

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"])
    def judges(self, request):
        return Response(judge_names())

    @extend_schema(parameters=[JudgeReportSerializer], responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"])
    def report(self, request):
        """Candidate judge vs reference: correlations with bootstrap CIs, flips, verdict. ``export=csv``."""
        serializer = JudgeReportSerializer(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        report = judge_report(ReportRequest(**data))
        if request.query_params.get("export") == "csv":
            return _csv(report_csv(report), "judge-report.csv")
        return Response(report)

    @extend_schema(parameters=[OpenApiParameter("paper", str), OpenApiParameter("version", str)],
                   request=RubricWhatIfSerializer, responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get", "post"], url_path="what-if")
    def what_if(self, request):
        """Re-score every graded run of a paper under another version, the draft, or a posted tree."""
        source = request.data if request.method == "POST" else request.query_params
        serializer = RubricWhatIfSerializer(data=source)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if data.get("tree") is not None:
            tree, label = data["tree"], "posted tree"
            if not isinstance(tree, dict):
                raise DjangoValidationError("tree must be a JSON object (a PaperBench root node).")
        else:
            tree, label = what_if_tree(data["paper"], data.get("version"))
        return Response(what_if(data["paper"], tree, label))


def grade_json(grade) -> dict:
    return {"human_run": grade.run_id, "node_index": grade.node_index, "node_id": grade.node_id,
            "score": grade.score, "note": grade.explanation,
            "graded_by": grade.graded_by.get_username() if grade.graded_by else None,
            "graded_at": grade.graded_at.isoformat() if grade.graded_at else None,
            "root_score": JudgeRun.objects.values_list("score", flat=True).get(pk=grade.run_id)}


def _csv(text: str, filename: str) -> HttpResponse:
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@extend_schema_field({"oneOf": [{"type": "array", "items": {"type": "integer", "minimum": 1}},
                                 {"type": "string", "example": "3,5"}]})
class RunIdsField(serializers.Field):
    """Judge run ids, a list or ``"3,5,8"``, read by the same parser as the pages."""

    def to_internal_value(self, data) -> list[int]:
        try:
            return parse_run_ids(data)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None

    def to_representation(self, value) -> list[int]:
        return value


class AuditQueueSerializer(serializers.ModelSerializer):
    paper = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    runs = RunIdsField(help_text="The compared runs, base run first.")
    assignees = serializers.SlugRelatedField(slug_field="username", many=True, write_only=True,
                                             queryset=get_user_model().objects.all())
    category = serializers.CharField(required=False, allow_blank=True, write_only=True, default="")
    progress = serializers.SerializerMethodField()

    class Meta:
        model = AuditQueue
        fields = ["id", "name", "paper", "base_run", "runs", "submission_key", "created_at", "assignees", "category",
                  "progress"]
        read_only_fields = ["id", "paper", "base_run", "submission_key", "created_at", "progress"]
        extra_kwargs = {"name": {"required": False}}

    def get_progress(self, queue: AuditQueue) -> list[dict]:
        return queue_progress([queue])


class ReassignSerializer(serializers.Serializer):
    from_user = serializers.SlugRelatedField(slug_field="username", queryset=get_user_model().objects.all(),
                                             help_text="The grader whose open leaves are handed on.")
    to_users = serializers.SlugRelatedField(slug_field="username", many=True, queryset=get_user_model().objects.all(),
                                            help_text="Who takes them, round-robin.")


class AuditQueueViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                        viewsets.GenericViewSet):
    """Audit queues: the leaves where compared runs disagree, shared among graders; progress per user."""

    queryset = AuditQueue.objects.select_related("paper", "base_run")
    serializer_class = AuditQueueSerializer
    write_permission = {"create": "grade", "reassign": "grade"}

    @extend_schema(request=ReassignSerializer, responses=AuditQueueSerializer)
    @action(detail=True, methods=["post"])
    def reassign(self, request, pk=None):
        """Hand a grader's open leaves to others (the queue's creator, an admin, or the grader themself)."""
        queue = self.get_object()
        body = ReassignSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        moved = reassign_items(queue, from_user=body.validated_data["from_user"],
                               to_users=body.validated_data["to_users"], user=request.user)
        return Response({**self.get_serializer(queue).data, "moved": moved})

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        queue = create_queue(run_ids=data["runs"], assignees=data["assignees"], user=request.user,
                             name=data.get("name", ""), category=data.get("category", ""))
        return Response(self.get_serializer(queue).data, status=status.HTTP_201_CREATED)
