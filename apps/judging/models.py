from __future__ import annotations

from django.conf import settings
from django.db import models


class JudgeRun(models.Model):
    """One grading of one submission against one rubric version, by a model or a human."""

    class Kind(models.TextChoices):
        MODEL = "model", "Model judge"
        HUMAN = "human", "Human"

    paper = models.ForeignKey("papers.Paper", on_delete=models.CASCADE, related_name="judge_runs")
    trajectory = models.ForeignKey(
        "trajectories.Trajectory", null=True, blank=True, on_delete=models.SET_NULL, related_name="judge_runs"
    )
    rubric_version = models.ForeignKey("rubrics.RubricVersion", on_delete=models.PROTECT, related_name="judge_runs")
    # Kept even if versions are pruned: a grade always records the tree it was made against.
    rubric_hash = models.CharField(max_length=64)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.MODEL)
    judge_name = models.CharField(max_length=200)
    score = models.FloatField(null=True, blank=True)
    graded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.judge_name} on {self.paper.slug}"


class LeafGrade(models.Model):
    run = models.ForeignKey(JudgeRun, on_delete=models.CASCADE, related_name="grades")
    node_index = models.PositiveIntegerField(help_text="Pre-order position of the leaf in the version's tree.")
    node_id = models.CharField(max_length=100)
    score = models.FloatField()
    valid_score = models.BooleanField(default=True)
    explanation = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "node_index"]
        constraints = [models.UniqueConstraint(fields=["run", "node_index"], name="leaf_grade_unique")]
