from __future__ import annotations

from rest_framework import serializers, viewsets

from apps.rubrics.models import RubricVersion


class RubricVersionSerializer(serializers.ModelSerializer):
    paper = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = RubricVersion
        fields = ["id", "paper", "number", "message", "content_hash", "node_count", "leaf_count", "created_at"]
        read_only_fields = fields


class RubricVersionViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = RubricVersionSerializer
    queryset = RubricVersion.objects.select_related("paper")
