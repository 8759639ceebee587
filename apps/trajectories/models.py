from __future__ import annotations

from django.conf import settings
from django.db import models


class VisibleTrajectoryManager(models.Manager):
    """Every read sees only finished imports: an import writes each run in its own short
    transaction, hidden behind its ``import_batch``, and shows them all at its end."""

    def get_queryset(self) -> models.QuerySet[Trajectory]:
        return super().get_queryset().filter(import_batch="")


class Trajectory(models.Model):
    class Source(models.TextChoices):
        IMPORTED = "imported", "Imported"
        DISTILLED = "distilled", "Distilled"
        ROLLOUT = "rollout", "RL rollout"

    class Review(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"

    class EndState(models.TextChoices):
        SUBMITTED = "submitted", "Submitted"
        TIMED_OUT = "timed_out", "Timed out"
        STEP_LIMIT = "step_limit", "Step limit"
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
    # True while an agent run is still writing turns (TrajectoryRecorder): the page follows it.
    live = models.BooleanField(default=False)
    turn_count = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    tokenizer = models.CharField(max_length=200, blank=True, help_text="Empty = estimated counts.")
    # Where it came from: the task id inside the run, the file (and record) it was read from.
    task = models.CharField(max_length=300, blank=True)
    source_name = models.CharField(max_length=500, blank=True)
    meta = models.JSONField(default=dict, blank=True)
    submission_url = models.CharField(max_length=500, blank=True, help_text="Submission snapshot.")
    # "Pin prefix up to here" from the browser; None = the split's automatic rule.
    prefix_end = models.IntegerField(null=True, blank=True)
    review = models.CharField(max_length=10, choices=Review.choices, blank=True)
    review_reason = models.TextField(blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    imported_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Set while the import that writes this run is still going (services.import_trajectories).
    import_batch = models.CharField(max_length=60, blank=True, db_index=True)

    objects = VisibleTrajectoryManager()
    all_objects = models.Manager()  # hidden runs included: only the import itself uses it

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
    source_role = models.CharField(max_length=40, blank=True)
    meta = models.JSONField(default=dict, blank=True)
    # The split masks these: the turn stays in the context but carries no loss.
    no_loss = models.BooleanField(default=False)
    # Token-in/token-out (RL rollouts): the ids the policy sampled for this assistant turn and
    # their log-probs, kept so a rollout can be trained on exactly what was sampled.
    token_ids = models.JSONField(default=list, blank=True)
    logprobs = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["trajectory", "index"]
        constraints = [models.UniqueConstraint(fields=["trajectory", "index"], name="turn_index_unique")]


class AnnotationLabel(models.Model):
    """The editable set of labels an annotation can carry."""

    name = models.CharField(max_length=60, unique=True)
    color = models.CharField(max_length=20, default="#8a6d3b")
    description = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TurnAnnotation(models.Model):
    trajectory = models.ForeignKey(Trajectory, on_delete=models.CASCADE, related_name="annotations")
    turn_index = models.PositiveIntegerField()
    label = models.ForeignKey(AnnotationLabel, on_delete=models.PROTECT, related_name="annotations")
    note = models.TextField(blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["trajectory", "turn_index", "created_at"]


class AnnotationQueue(models.Model):
    """Turns (or whole runs) to label, worked through by several users at once.

    Each item is handed to one user at a time (a lock that lapses), so two people never label the
    same turn twice; labelled, skipped and still-open items give the progress.
    """

    class Unit(models.TextChoices):
        TURNS = "turns", "Turns (a label per assistant turn)"
        RUNS = "runs", "Runs (accept or reject each trajectory)"

    name = models.CharField(max_length=200)
    unit = models.CharField(max_length=10, choices=Unit.choices, default=Unit.TURNS)
    instructions = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class QueueItem(models.Model):
    class State(models.TextChoices):
        OPEN = "open", "Open"
        DONE = "done", "Labelled"
        SKIPPED = "skipped", "Skipped"

    queue = models.ForeignKey(AnnotationQueue, on_delete=models.CASCADE, related_name="items")
    position = models.PositiveIntegerField()
    trajectory = models.ForeignKey(Trajectory, on_delete=models.CASCADE, related_name="queue_items")
    turn_index = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: the whole run.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    # Who has it now, until when: another user gets the next item meanwhile.
    locked_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="+")
    locked_until = models.DateTimeField(null=True, blank=True)
    done_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="+")
    done_at = models.DateTimeField(null=True, blank=True)
    # What the grade wrote, so an undo takes exactly that back: the turn's annotation, or the
    # run's review as it was before.
    annotation = models.ForeignKey(TurnAnnotation, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    previous_review = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["queue", "position"]
        constraints = [models.UniqueConstraint(fields=["queue", "position"], name="queue_item_position_unique")]
        indexes = [models.Index(fields=["queue", "state", "position"])]
