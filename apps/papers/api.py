from __future__ import annotations

from rest_framework import serializers, viewsets

from apps.papers.models import Paper


class PaperSerializer(serializers.ModelSerializer):
    class Meta:
        model = Paper
        fields = [
            "id", "slug", "title", "arxiv_id", "venue", "year", "abstract", "blacklist", "split", "tags",
            "status", "created_at", "updated_at",
        ]
        read_only_fields = fields


class PaperViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = PaperSerializer
    queryset = Paper.objects.all()
