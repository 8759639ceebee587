"""Paper candidates API: list with filters, import a list, triage, attach a PDF.

Same service functions as the intake pages (apps/papers/intake.py).
"""

from __future__ import annotations

from typing import ClassVar

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.core.parsers import FormParser, JSONParser, MultiPartParser
from apps.papers import intake
from apps.papers.candidates import FORMATS, CandidateFilter, normalise_venue
from apps.papers.models import Paper, PaperCandidate


class PaperCandidateSerializer(serializers.ModelSerializer):
    paper = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = PaperCandidate
        fields = ("id", "title", "arxiv_id", "authors", "venue", "venue_raw", "year", "citations", "url", "pdf_url",
                  "abstract", "extra", "source_format", "source_name", "source_line", "status", "note", "paper",
                  "created_at")
        read_only_fields = tuple(f for f in fields if f not in ("status", "note"))

    def validate_status(self, value: str) -> str:
        if value == PaperCandidate.Status.IMPORTED or (self.instance and self.instance.status == "imported"):
            raise serializers.ValidationError("'imported' is set by attaching a PDF, and stays.")
        return value


class CandidateImportSerializer(serializers.Serializer):
    file = serializers.FileField(required=False, help_text="arXiv id list (.txt), BibTeX (.bib) or CSV (.csv)")
    text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False,
                                 help_text="The list as text, instead of a file")
    format = serializers.ChoiceField(choices=[("", "guess"), *[(f, f) for f in FORMATS]], required=False, default="")
    venues = serializers.ListField(child=serializers.CharField(max_length=200), required=False, default=list)
    year_min = serializers.IntegerField(required=False, min_value=1900, max_value=2100)
    year_max = serializers.IntegerField(required=False, min_value=1900, max_value=2100)
    min_citations = serializers.IntegerField(required=False, min_value=0)

    def validate(self, attrs):
        if not attrs.get("file") and not (attrs.get("text") or "").strip():
            raise serializers.ValidationError("Send a file or the list as text.")
        return attrs


class AttachPdfSerializer(serializers.Serializer):
    pdf = serializers.FileField()
    split = serializers.ChoiceField(choices=Paper.Split.choices, default=Paper.Split.TRAIN)


_FILTERS = [
    OpenApiParameter("q", str), OpenApiParameter("status", str), OpenApiParameter("venue", str, many=True),
    OpenApiParameter("year_min", int), OpenApiParameter("year_max", int), OpenApiParameter("min_citations", int),
]


class PaperCandidateViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin,
                            viewsets.GenericViewSet):
    """Research-Factory paper candidates: import lists, filter, keep/reject, attach PDFs."""

    serializer_class = PaperCandidateSerializer
    write_permission: ClassVar[dict[str, str]] = {
        "update": "edit_papers", "partial_update": "edit_papers", "import_list": "edit_papers",
        "attach_pdf": "edit_papers",
    }

    def get_queryset(self):
        params = self.request.query_params
        values: dict = {"q": params.get("q"), "status": params.get("status"),
                        "venue": [normalise_venue(v) for v in params.getlist("venue") if v.strip()]}
        for name in ("year_min", "year_max", "min_citations"):
            raw = params.get(name)
            if raw not in (None, ""):
                if not raw.isdigit():
                    raise serializers.ValidationError({name: "must be a whole number"})
                values[name] = int(raw)
        return intake.filtered_candidates(values).select_related("paper")

    @extend_schema(parameters=_FILTERS)
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request={"multipart/form-data": CandidateImportSerializer,
                            "application/json": CandidateImportSerializer},
                   responses={201: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["post"], url_path="import",
            parser_classes=[MultiPartParser, FormParser, JSONParser])
    def import_list(self, request) -> Response:
        """Import a candidate list; refused whole (400, every bad line with its number) or stored."""
        data = CandidateImportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        upload = values.get("file")
        rule = CandidateFilter(frozenset(normalise_venue(v) for v in values["venues"]), values.get("year_min"),
                               values.get("year_max"), values.get("min_citations"))
        text = intake.decode_upload(upload) if upload else values["text"]
        result = intake.import_candidates(text, values["format"], rule=rule,
                                          source_name=upload.name if upload else "api", user=request.user)
        return Response(result.as_dict(), status=status.HTTP_201_CREATED)

    @extend_schema(request={"multipart/form-data": AttachPdfSerializer}, responses={201: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"], url_path="attach-pdf", parser_classes=[MultiPartParser, FormParser])
    def attach_pdf(self, request, pk=None) -> Response:
        """Convert the PDF to Markdown and create (or update) the candidate's paper."""
        candidate = self.get_object()
        data = AttachPdfSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        paper = intake.attach_pdf(candidate, data.validated_data["pdf"], split=data.validated_data["split"],
                                  user=request.user)
        return Response({"paper": paper.pk, "slug": paper.slug, "markdown_chars": len(paper.markdown)},
                        status=status.HTTP_201_CREATED)
