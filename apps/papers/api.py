"""Papers API: CRUD, PaperBench import/export, and the paper's rubric (tree, versions, diff).

Same service functions as the pages and the management commands (apps/papers/services.py,
apps/rubrics/services.py); this module only shapes requests and answers.
"""

from __future__ import annotations

import json
import re
from typing import ClassVar

from django.conf import settings
from django.db.models import Q
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound
from rest_framework.response import Response

from apps.core.parsers import FormParser, MultiPartParser
from apps.papers import services as paper_services
from apps.papers.models import Paper
from apps.rubrics.api import RubricVersionSerializer, problem_list
from apps.rubrics.models import RubricVersion
from apps.rubrics.services.diff import diff_trees
from apps.rubrics.services.editor import current_stamp, draft_problems, draft_stamp, editor_payload
from apps.rubrics.services.store import export_draft, load_draft
from apps.rubrics.services.versions import create_version, restore_version


class PaperSerializer(serializers.ModelSerializer):
    revision = serializers.IntegerField(
        min_value=1, required=False,
        help_text="The revision you read. PUT and PATCH must send it (or an If-Match header with the ETag); "
                  "a stale one gets 409 with the paper as it is now.")

    class Meta:
        model = Paper
        fields = (
            "id", "slug", "title", "arxiv_id", "venue", "year", "abstract", "markdown", "addendum", "judge_addendum",
            "blacklist", "split", "tags", "status", "revision", "created_at", "updated_at",
        )
        read_only_fields = ("id", "created_at", "updated_at")

    def _string_list(self, value, name: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise serializers.ValidationError(f"{name} must be a list of strings")
        return value

    def validate_blacklist(self, value):
        return self._string_list(value, "blacklist")

    def validate_tags(self, value):
        return self._string_list(value, "tags")


class PaperImportSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A zip of one PaperBench paper folder, or a bare rubric .json")
    slug = serializers.SlugField(required=False, help_text="Paper id (default: config.yaml id or file name)")


class ImportAnswerSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    slug = serializers.CharField()
    created = serializers.BooleanField()
    node_count = serializers.IntegerField()
    version = serializers.IntegerField(allow_null=True)
    warnings = serializers.ListField(child=serializers.DictField())


class VersionCreateSerializer(serializers.Serializer):
    message = serializers.CharField(max_length=500, allow_blank=True, required=False, default="")


class RestoreSerializer(serializers.Serializer):
    draft = serializers.ChoiceField(choices=["keep", "discard"], required=False,
                                    help_text="What to do with draft edits no version holds (asked with 409).")
    draft_hash = serializers.CharField(max_length=64, required=False, default="",
                                       help_text="With draft=discard: the draft_hash the 409 named.")


_VERSION_PARAM = OpenApiParameter("version", int, description="A saved version number (default: the draft)")
_IF_MATCH = OpenApiParameter("If-Match", str, OpenApiParameter.HEADER,
                             description='The ETag you read ("3"): instead of a revision in the body.')
_EDIT_RESPONSES = {200: PaperSerializer, 409: OpenApiTypes.OBJECT, 428: OpenApiTypes.OBJECT}


class RevisionRequired(APIException):
    status_code = 428
    default_detail = ("Say which revision you read: a 'revision' field in the body, or an If-Match header with "
                      "the paper's ETag. Without it an edit could undo someone else's.")
    default_code = "revision_required"


def etag(paper: Paper) -> dict[str, str]:
    return {"ETag": paper.etag}


def read_revision(request, body_revision: int | None) -> int:
    """The revision an edit is based on: the body's ``revision`` or the If-Match ETag."""
    header = request.headers.get("If-Match")
    if header is None:
        if body_revision is None:
            raise RevisionRequired()
        return body_revision
    match = re.fullmatch(r'\s*"?(\d{1,18})"?\s*', header)
    if match is None:
        raise serializers.ValidationError({"If-Match": ['must be the ETag of the paper as you read it, e.g. "3"']})
    revision = int(match.group(1))
    if body_revision is not None and body_revision != revision:
        raise serializers.ValidationError({"revision": [f"is {body_revision}, but If-Match says {revision}"]})
    return revision


class PaperViewSet(viewsets.ModelViewSet):
    """Papers, with their rubric: nested PaperBench tree, versions, diff, restore, import, export."""

    serializer_class = PaperSerializer
    write_permission: ClassVar[dict[str, str]] = {
        "create": "edit_papers", "update": "edit_papers", "partial_update": "edit_papers",
        "destroy": "edit_papers", "import_paper": "edit_papers",
        "versions": "edit_rubrics", "restore": "edit_rubrics",
    }

    def retrieve(self, request, *args, **kwargs) -> Response:
        paper = self.get_object()
        return Response(self.get_serializer(paper).data, headers=etag(paper))

    def perform_create(self, serializer) -> None:
        serializer.validated_data.pop("revision", None)  # a new paper starts at 1
        serializer.save()

    @extend_schema(parameters=[_IF_MATCH], responses=_EDIT_RESPONSES)
    def update(self, request, *args, **kwargs) -> Response:
        """Write the fields sent, if the paper is still at the revision read (409 with the current one if not)."""
        paper = self.get_object()
        serializer = self.get_serializer(paper, data=request.data, partial=kwargs.get("partial", False))
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        revision = read_revision(request, changes.pop("revision", None))
        paper = paper_services.update_paper(paper, revision, changes)
        return Response(self.get_serializer(paper).data, headers=etag(paper))

    @extend_schema(parameters=[_IF_MATCH], responses=_EDIT_RESPONSES)
    def partial_update(self, request, *args, **kwargs) -> Response:
        return self.update(request, *args, partial=True, **kwargs)

    def get_queryset(self):
        papers = Paper.objects.all()
        params = self.request.query_params
        if q := params.get("q", "").strip():
            papers = papers.filter(Q(title__icontains=q) | Q(slug__icontains=q) | Q(arxiv_id__icontains=q))
        for name in ("slug", "split", "status"):
            if value := params.get(name):
                papers = papers.filter(**{name: value})
        return papers

    def _version(self, paper: Paper, raw: str | None) -> RubricVersion | None:
        if raw in (None, "", "draft"):
            return None
        if not str(raw).isdigit():
            raise serializers.ValidationError({"version": "must be a version number or 'draft'"})
        version = paper.rubric_versions.filter(number=int(raw)).first()
        if version is None:
            raise NotFound(f"{paper.slug} has no version {raw}")
        return version

    @extend_schema(parameters=[_VERSION_PARAM], responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def tree(self, request, pk=None) -> HttpResponse:
        """The rubric as nested PaperBench JSON, exactly as it exports (key order kept)."""
        paper = self.get_object()
        version = self._version(paper, request.query_params.get("version"))
        if version is not None:
            # Stored text is already the exact value: no parse, no re-encode.
            return HttpResponse(version.tree_json, content_type="application/json")
        tree = export_draft(paper)
        return HttpResponse(json.dumps(tree, ensure_ascii=False), content_type="application/json")

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def draft(self, request, pk=None) -> Response:
        """The draft as the editor reads it: flat pre-order nodes with pks, versions, effective weights."""
        paper = self.get_object()
        return Response(editor_payload(load_draft(paper)))

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def problems(self, request, pk=None) -> Response:
        """Validation problems of the draft, each naming its node path and row pk."""
        paper = self.get_object()
        draft = load_draft(paper)
        return Response({"problems": draft_problems(draft), "stamp": draft_stamp(draft)})

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def stamp(self, request, pk=None) -> Response:
        """A fingerprint of the draft that changes with every write (cheap: no tree is read), and the
        root's pk (a new one: the draft was replaced by a restore or an import)."""
        return Response(current_stamp(self.get_object()))

    @extend_schema(request=VersionCreateSerializer, responses={200: RubricVersionSerializer(many=True),
                                                               201: RubricVersionSerializer})
    @action(detail=True, methods=["get", "post"])
    def versions(self, request, pk=None) -> Response:
        """GET: every saved version, newest first. POST: save the draft as a new version."""
        paper = self.get_object()
        if request.method == "GET":
            rows = paper.rubric_versions.select_related("created_by").order_by("-number")
            return Response(RubricVersionSerializer(rows, many=True).data)
        data = VersionCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = create_version(paper, request.user, data.validated_data["message"])
        return Response(RubricVersionSerializer(version).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[OpenApiParameter("a", str, description="Older side: a version number or 'draft'"),
                    OpenApiParameter("b", str, description="Newer side: a version number or 'draft' (default)")],
        responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"], url_path="versions/diff")
    def diff(self, request, pk=None) -> Response:
        """Nodes added, removed, moved and changed between two versions (or a version and the draft)."""
        paper = self.get_object()
        raw_a = request.query_params.get("a")
        if raw_a is None:
            raise serializers.ValidationError({"a": "required"})
        sides = []
        for raw in (raw_a, request.query_params.get("b", "draft")):
            version = self._version(paper, raw)
            sides.append(version.tree if version is not None else None)
        diff = diff_trees(*[t if t is not None else export_draft(paper) for t in sides])
        return Response(diff.as_dict())

    @extend_schema(request=RestoreSerializer, responses={201: RubricVersionSerializer, 409: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"], url_path=r"versions/(?P<number>[0-9]+)/restore")
    def restore(self, request, pk=None, number: str = "") -> Response:
        """Make a saved version the draft again, recorded as a new version.

        A draft with edits that no version holds gets 409 (with its ``draft_hash``) unless the
        request says ``draft=keep`` (saved as a version first) or ``draft=discard`` with that hash.
        """
        paper = self.get_object()
        version = self._version(paper, number)
        choice = RestoreSerializer(data=request.data)
        choice.is_valid(raise_exception=True)
        done = restore_version(version, request.user, draft=choice.validated_data.get("draft"),
                               draft_hash=choice.validated_data["draft_hash"])
        return Response({**RubricVersionSerializer(done.version).data,
                         "kept_version": done.kept.number if done.kept else None}, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[_VERSION_PARAM], responses={(200, "application/zip"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def export(self, request, pk=None) -> HttpResponse:
        """The PaperBench folder as a zip: rubric.json, blacklist.txt, config.yaml, Markdown files."""
        paper = self.get_object()
        version = self._version(paper, request.query_params.get("version"))
        data = paper_services.export_zip(paper, version)
        response = HttpResponse(data, content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{paper.slug}.zip"'
        return response

    @extend_schema(request={"multipart/form-data": PaperImportSerializer},
                   responses={201: ImportAnswerSerializer, 200: ImportAnswerSerializer, 400: OpenApiTypes.OBJECT,
                              413: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["post"], url_path="import", parser_classes=[MultiPartParser, FormParser])
    def import_paper(self, request) -> Response:
        """Import a PaperBench paper (zip or bare rubric .json); refused whole, with every problem listed."""
        data = PaperImportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        limit = settings.KLONG_MAX_UPLOAD_BYTES
        if upload.size > limit:
            return Response({"detail": f"The upload is larger than the limit of {limit:,} bytes."},
                            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        bundle = paper_services.read_paper_zip(upload, upload.name, limit)
        result = paper_services.import_paper(bundle, request.user, slug=data.validated_data.get("slug"))
        answer = {"id": result.paper.pk, "slug": result.paper.slug, "created": result.created,
                  "node_count": result.node_count, "version": result.version.number if result.version else None,
                  "warnings": problem_list(result.warnings)}
        return Response(answer, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)
