from __future__ import annotations

from django.db import models


class Trajectory(models.Model):
    class Source(models.TextChoices):
        IMPORTED = "imported", "Imported"
        DISTILLED = "distilled", "Distilled"
        ROLLOUT = "rollout", "RL rollout"

    class EndState(models.TextChoices):
        SUBMITTED = "submitted", "Submitted"
        TIMED_OUT = "timed_out", "Timed out"
        CANCELLED = "cancelled", "Cancelled"
        ERROR = "error", "Error"

    paper = models.ForeignKey(
        "papers.Paper", null=True, blank=True, on_delete=models.SET_NULL, related_name="trajectories"
    )
    title = models.CharField(max_length=300, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.IMPORTED)
    source_format = models.CharField(max_length=40, blank=True)
    model_name = models.CharField(max_length=200, blank=True)
    scaffold = models.CharField(max_length=100, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    wall_time_s = models.FloatField(null=True, blank=True)
    end_state = models.CharField(max_length=10, choices=EndState.choices, blank=True)
    final_score = models.FloatField(null=True, blank=True)
    policy_version = models.CharField(max_length=100, blank=True)
    turn_count = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    tokenizer = models.CharField(max_length=200, blank=True, help_text="Empty = estimated counts.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "trajectories"

    def __str__(self) -> str:
        return self.title or f"trajectory {self.pk}"


class Turn(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system", "System"
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"
        TOOL = "tool", "Tool"

    trajectory = models.ForeignKey(Trajectory, on_delete=models.CASCADE, related_name="turns")
    index = models.PositiveIntegerField()
    role = models.CharField(max_length=10, choices=Role.choices)
    text = models.TextField(blank=True)
    reasoning = models.TextField(blank=True)
    tool_calls = models.JSONField(default=list, blank=True)
    tool_call_id = models.CharField(max_length=200, blank=True)
    timestamp = models.DateTimeField(null=True, blank=True)
    token_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["trajectory", "index"]
        constraints = [models.UniqueConstraint(fields=["trajectory", "index"], name="turn_index_unique")]
