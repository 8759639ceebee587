from __future__ import annotations

from rest_framework import serializers, viewsets

from apps.judging.models import JudgeRun


class JudgeRunSerializer(serializers.ModelSerializer):
    paper = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = JudgeRun
        fields = ["id", "paper", "trajectory", "rubric_version", "rubric_hash", "kind", "judge_name", "score", "created_at"]
        read_only_fields = fields


class JudgeRunViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = JudgeRunSerializer
    queryset = JudgeRun.objects.select_related("paper")
