from __future__ import annotations

from django.conf import settings
from django.db import models


class RubricVersion(models.Model):
    """An immutable, numbered version of a paper's rubric tree (PaperBench JSON)."""

    paper = models.ForeignKey("papers.Paper", on_delete=models.CASCADE, related_name="rubric_versions")
    number = models.PositiveIntegerField()
    message = models.CharField(max_length=500, blank=True)
    tree = models.JSONField()
    content_hash = models.CharField(max_length=64, db_index=True)
    node_count = models.PositiveIntegerField(default=0)
    leaf_count = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["paper", "-number"]
        constraints = [models.UniqueConstraint(fields=["paper", "number"], name="rubric_version_number_unique")]

    def __str__(self) -> str:
        return f"{self.paper.slug} v{self.number}"
