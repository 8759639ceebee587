from __future__ import annotations

from rest_framework import serializers, viewsets

from apps.trajectories.models import Trajectory


class TrajectorySerializer(serializers.ModelSerializer):
    paper = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Trajectory
        fields = [
            "id", "paper", "title", "source", "source_format", "model_name", "scaffold", "started_at",
            "ended_at", "wall_time_s", "end_state", "final_score", "policy_version", "turn_count",
            "total_tokens", "tokenizer", "created_at",
        ]
        read_only_fields = fields


class TrajectoryViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = TrajectorySerializer
    queryset = Trajectory.objects.select_related("paper")
