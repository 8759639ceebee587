"""Datasets API: list, read, create from trajectory ids, edit notes."""

from __future__ import annotations

from typing import ClassVar

from rest_framework import mixins, serializers, viewsets

from apps.datasets.models import Dataset
from apps.datasets.services import create_dataset


class DatasetSerializer(serializers.ModelSerializer):
    trajectories = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    # Ids past the largest a database key can hold would be a 500 in the query.
    trajectory_ids = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
                                           write_only=True, min_length=1, max_length=100_000)

    class Meta:
        model = Dataset
        fields = ("id", "name", "trajectories", "trajectory_ids", "origin_job", "threshold", "top_k", "notes",
                  "stats", "created_at")
        read_only_fields = ("id", "trajectories", "origin_job", "threshold", "top_k", "stats", "created_at")

    def get_fields(self):
        fields = super().get_fields()
        if self.instance is not None:
            # The SFT job names its dataset: a name and its trajectories never change after creation.
            fields["name"].read_only = True
            fields["trajectory_ids"].required = False
        return fields

    def create(self, validated_data):
        return create_dataset(validated_data["name"], validated_data["trajectory_ids"],
                              user=self.context["request"].user, notes=validated_data.get("notes", ""))

    def update(self, instance, validated_data):
        instance.notes = validated_data.get("notes", instance.notes)
        instance.save(update_fields=["notes"])
        return instance


class DatasetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                     mixins.UpdateModelMixin, viewsets.GenericViewSet):
    """Named trajectory datasets (a distillation job's kept runs, or hand-picked); SFT selects one by name."""

    serializer_class = DatasetSerializer
    queryset = Dataset.objects.prefetch_related("trajectories").order_by("-created_at")
    write_permission: ClassVar[dict[str, str]] = {
        "create": "launch_jobs", "update": "launch_jobs", "partial_update": "launch_jobs",
    }
