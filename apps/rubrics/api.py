"""Rubric API: draft node edits (create / update / move / delete / duplicate) and versions.

Every write names the node version it read; a stale one gets 409 with the node as it is now,
so the editor can offer merge or overwrite. The services' errors (apps/rubrics/services/errors.py)
answer their status through the API's exception handler. Paper-level rubric endpoints (tree, versions,
diff, restore, import, export) live on the paper viewset in apps/papers/api.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.papers.models import Paper
from apps.rubrics import scoring
from apps.rubrics.models import RubricNode, RubricVersion
from apps.rubrics.services.editor import node_dict
from apps.rubrics.services.edits import (
    EDITABLE_FIELDS,
    MAX_BULK_EDITS,
    add_node,
    add_subtree,
    delete_subtree,
    duplicate_subtree,
    move_node,
    update_node,
    update_nodes,
)
from apps.rubrics.services.store import load_draft
from apps.rubrics.validation import FINEGRAINED_TASK_CATEGORIES, TASK_CATEGORIES, problem_dict


def problem_list(problems: list[Any]) -> list[dict[str, Any]]:
    return [problem_dict(p) for p in problems]


def draft_shares(paper: Paper) -> dict[int, float | None]:
    """Every draft node's share of the root score, by pk: sent with each answer to a change of
    weights or of the tree's shape, so the editor shows the server's numbers."""
    draft = load_draft(paper)
    return dict(zip(draft.pks, scoring.shares(draft.nodes), strict=True))


class RubricVersionSerializer(serializers.ModelSerializer):
    paper = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)

    class Meta:
        model = RubricVersion
        fields = ("id", "paper", "number", "message", "content_hash", "node_count", "leaf_count", "created_by",
                  "created_at")
        read_only_fields = fields


class RubricVersionViewSet(viewsets.ReadOnlyModelViewSet):
    """Every saved version of every paper's rubric (per-paper lists: /api/papers/{id}/versions/)."""

    serializer_class = RubricVersionSerializer
    queryset = RubricVersion.objects.select_related("paper", "created_by")


class RubricNodeSerializer(serializers.ModelSerializer):
    """A draft node as the editor sees it; ``id`` is the PaperBench id, ``pk`` the row."""

    pk = serializers.IntegerField(read_only=True)
    id = serializers.CharField(source="node_id", read_only=True)
    weight = serializers.JSONField(read_only=True)

    class Meta:
        model = RubricNode
        fields = ("pk", "paper", "parent", "position", "version", "id", "requirements", "weight", "task_category",
                  "finegrained_task_category")
        read_only_fields = fields


_CATEGORY = serializers.ChoiceField(choices=TASK_CATEGORIES, allow_null=True, allow_blank=True, required=False)
_FINE = serializers.ChoiceField(choices=FINEGRAINED_TASK_CATEGORIES, allow_null=True, allow_blank=True,
                                required=False)


class NodeFieldsSerializer(serializers.Serializer):
    requirements = serializers.CharField(allow_blank=True, trim_whitespace=False, required=False)
    weight = serializers.FloatField(min_value=0, required=False)
    task_category = _CATEGORY
    finegrained_task_category = _FINE


class NodeUpdateSerializer(NodeFieldsSerializer):
    version = serializers.IntegerField(help_text="The node version you read; a stale one gets 409.")


class NodeEditSerializer(NodeUpdateSerializer):
    pk = serializers.IntegerField(help_text="pk of the node")


class BulkUpdateSerializer(serializers.Serializer):
    edits = NodeEditSerializer(many=True, allow_empty=False, max_length=MAX_BULK_EDITS,
                               help_text="Each node's pk, the version you read, and its new fields; all or none.")


class NodeCreateSerializer(NodeFieldsSerializer):
    parent = serializers.IntegerField(help_text="pk of the parent node")
    position = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    subtree = serializers.JSONField(required=False, help_text="A PaperBench subtree to insert (paste, undo).")


class NodeMoveSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    parent = serializers.IntegerField()
    position = serializers.IntegerField(min_value=0, required=False, allow_null=True)


class DeletedSubtreeSerializer(serializers.Serializer):
    parent = serializers.IntegerField()
    position = serializers.IntegerField()
    subtree = serializers.JSONField()
    pks = serializers.ListField(child=serializers.IntegerField())


def _editable(data: dict[str, Any]) -> dict[str, Any]:
    # Only node fields go to the service (FloatField gives 2.0 for "2"; the service makes it 2).
    return {k: v for k, v in data.items() if k in EDITABLE_FIELDS}


class RubricNodeViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Single-node edits of a paper's draft tree."""

    serializer_class = RubricNodeSerializer
    queryset = RubricNode.objects.select_related("paper")
    write_permission = "edit_rubrics"
    # A stale edit's 409 carries the node as the editor reads it.
    render_current: ClassVar[Callable[[RubricNode], dict[str, Any]]] = staticmethod(node_dict)

    @staticmethod
    def _created(paper: Paper) -> Callable[[list[RubricNode]], Response]:
        return lambda rows: Response({"nodes": [node_dict(r) for r in rows], "shares": draft_shares(paper)},
                                     status=status.HTTP_201_CREATED)

    @staticmethod
    def _node(row: RubricNode, *, reshaped: bool = True) -> Response:
        return Response({**node_dict(row), **({"shares": draft_shares(row.paper)} if reshaped else {})})

    @extend_schema(request=NodeCreateSerializer, responses={201: RubricNodeSerializer(many=True)})
    def create(self, request, *args, **kwargs) -> Response:
        data = NodeCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        parent = RubricNode.objects.filter(pk=values["parent"]).select_related("paper").first()
        if parent is None:
            return Response({"detail": "No such parent node."}, status=status.HTTP_404_NOT_FOUND)
        fields = _editable(values)
        if "subtree" in values:
            subtree = values["subtree"]
            if not isinstance(subtree, dict):
                return Response({"detail": "subtree must be a JSON object"}, status=status.HTTP_400_BAD_REQUEST)
            return self._created(parent.paper)(add_subtree(parent.paper, parent.pk, values.get("position"), subtree))
        return self._created(parent.paper)([add_node(parent.paper, parent.pk, values.get("position"), **fields)])

    @extend_schema(request=NodeUpdateSerializer, responses={200: RubricNodeSerializer, 409: OpenApiTypes.OBJECT})
    def partial_update(self, request, *args, **kwargs) -> Response:
        node = self.get_object()
        data = NodeUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        row = update_node(node.paper, node.pk, values["version"], _editable(values))
        return self._node(row, reshaped="weight" in values)

    @extend_schema(
        parameters=[OpenApiParameter("version", int, description="The node version you read (409 when stale).")],
        responses={200: DeletedSubtreeSerializer, 409: OpenApiTypes.OBJECT})
    def destroy(self, request, *args, **kwargs) -> Response:
        node = self.get_object()
        raw = request.query_params.get("version")
        if raw is not None and not raw.isdigit():
            return Response({"detail": "version must be a number"}, status=status.HTTP_400_BAD_REQUEST)
        expected = int(raw) if raw is not None else None
        removed = delete_subtree(node.paper, node.pk, expected)
        return Response({"parent": removed.parent, "position": removed.position, "subtree": removed.subtree,
                         "pks": removed.pks, "shares": draft_shares(node.paper)})

    @extend_schema(request=NodeMoveSerializer, responses={200: RubricNodeSerializer, 409: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def move(self, request, pk=None) -> Response:
        node = self.get_object()
        data = NodeMoveSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        return self._node(move_node(node.paper, node.pk, values["version"], values["parent"], values.get("position")))

    @extend_schema(request=BulkUpdateSerializer, responses={200: RubricNodeSerializer(many=True),
                                                            409: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["post"], url_path="bulk-update")
    def bulk_update(self, request) -> Response:
        """Change several nodes of one draft at once (e.g. the category of every leaf of a subtree)."""
        data = BulkUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        edits = data.validated_data["edits"]
        first = RubricNode.objects.filter(pk=edits[0]["pk"]).select_related("paper").first()
        if first is None:
            return Response({"detail": f"No node {edits[0]['pk']}."}, status=status.HTTP_404_NOT_FOUND)
        rows = update_nodes(first.paper, [(e["pk"], e["version"], _editable(e)) for e in edits])
        return Response({"nodes": [node_dict(r) for r in rows]})

    @extend_schema(request=None, responses={201: RubricNodeSerializer(many=True)})
    @action(detail=True, methods=["post"])
    def duplicate(self, request, pk=None) -> Response:
        node = self.get_object()
        return self._created(node.paper)(duplicate_subtree(node.paper, node.pk))
