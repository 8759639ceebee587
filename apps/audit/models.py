from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditQueue(models.Model):
    """Leaves of one submission where score sources disagree, shared out among graders.

    ``runs`` are the compared JudgeRun ids, in column order; the first is the base run whose
    rubric version numbers the leaves. Grading a leaf in one's own human run completes the item.
    """

    name = models.CharField(max_length=200)
    paper = models.ForeignKey("papers.Paper", on_delete=models.CASCADE, related_name="audit_queues")
    base_run = models.ForeignKey("judging.JudgeRun", on_delete=models.CASCADE, related_name="audit_queues")
    runs = models.JSONField(default=list)
    submission_key = models.CharField(max_length=1100, db_index=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class AuditItem(models.Model):
    queue = models.ForeignKey(AuditQueue, on_delete=models.CASCADE, related_name="items")
    node_index = models.PositiveIntegerField(help_text="Pre-order position of the leaf in the base run's version.")
    node_id = models.CharField(max_length=100)
    category = models.CharField(max_length=40, blank=True)
    assignee = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="audit_items")
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["queue", "node_index"]
        constraints = [models.UniqueConstraint(fields=["queue", "node_index"], name="audit_item_unique")]
