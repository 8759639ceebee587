"""Named sets of trajectories: what a distillation job kept, what an SFT job trains on."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Dataset(models.Model):
    name = models.CharField(max_length=200, unique=True)
    trajectories = models.ManyToManyField("trajectories.Trajectory", related_name="datasets", blank=True)
    origin_job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="datasets", help_text="The distillation job that built it.")
    threshold = models.FloatField(null=True, blank=True, help_text="Judge score a run needed to be kept.")
    top_k = models.PositiveIntegerField(null=True, blank=True, help_text="At most this many runs kept per paper.")
    notes = models.TextField(blank=True)
    # Acceptance rate, runs, cost... as the origin job counted them.
    stats = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name
