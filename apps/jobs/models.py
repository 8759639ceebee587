from __future__ import annotations

from pathlib import PurePosixPath

from django.conf import settings
from django.db import models
from django.utils import timezone


class Job(models.Model):
    """A long action run by a Celery worker; this row, not Celery, is the source of truth."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        CANCELLING = "cancelling", "Cancelling"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED = (State.SUCCEEDED, State.FAILED, State.CANCELLED)

    kind = models.CharField(max_length=40)
    title = models.CharField(max_length=300, blank=True)
    state = models.CharField(max_length=12, choices=State.choices, default=State.QUEUED, db_index=True)
    config = models.JSONField(default=dict, blank=True)
    config_version = models.PositiveSmallIntegerField(default=1, help_text="Schema version of config.")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    queue = models.CharField(max_length=20, default="cpu")
    priority = models.PositiveSmallIntegerField(default=5)
    gpus = models.PositiveSmallIntegerField(default=0)
    time_limit_s = models.PositiveIntegerField(
        null=True, blank=True, help_text="Run time after which the job is stopped and failed; empty: the worker's limit."
    )
    progress = models.FloatField(default=0.0, help_text="0..1")
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(null=True, blank=True)
    stage = models.CharField(max_length=100, blank=True)
    message = models.CharField(max_length=500, blank=True)
    # Each claim by a worker bumps the attempt; a runner's writes are fenced by it, so a worker
    # that was presumed dead can never overwrite the run that replaced it.
    attempt = models.PositiveIntegerField(default=0)
    checkpoint = models.JSONField(default=dict, blank=True, help_text="What a resumed run starts from.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # When the run expects to finish, from the pace of its recent steps (apps/jobs/eta.py); empty
    # until it has made a couple of steps.
    eta_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    # The process running it: the worker's boot id and the pool process's pid (worker/lifecycle.py),
    # so a worker started again under the same name knows its old jobs are orphans.
    runner = models.CharField(max_length=40, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title or f"{self.kind} #{self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.state in self.FINISHED

    @property
    def eta_s(self) -> float | None:
        """Time left at the pace of the run's recent steps (its runner's estimate); None before it has one."""
        if self.state != self.State.RUNNING or self.eta_at is None:
            return None
        return max(0.0, (self.eta_at - timezone.now()).total_seconds())

    @property
    def duration_s(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at
        if end is None:

            end = timezone.now()
        return (end - self.started_at).total_seconds()


class JobMetric(models.Model):
    """One scalar logged by a job at a step (loss, reward, score...), for live plots."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    value = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "name", "step"]
        indexes = [models.Index(fields=["job", "name", "step"])]


# Job output offered for download (apps/jobs/downloads.py) lives in this folder of the data folder.
DOWNLOADS_FOLDER = "exports"


class JobArtifact(models.Model):
    """Something a job produced: a checkpoint, a dataset, a report."""

    class Kind(models.TextChoices):
        CHECKPOINT = "checkpoint", "Checkpoint"
        DATASET = "dataset", "Dataset"
        REPORT = "report", "Report"
        OTHER = "other", "Other"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.OTHER)
    path = models.CharField(max_length=1000, help_text="Relative to the data folder.")
    size_bytes = models.PositiveBigIntegerField(default=0)
    meta = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "created_at"]

    @property
    def downloadable(self) -> bool:
        parts = PurePosixPath(self.path).parts
        return len(parts) > 1 and parts[0] == DOWNLOADS_FOLDER and ".." not in parts


class ModelCheckpoint(models.Model):
    """A trained model and its lineage: what it was trained from, on what, and how."""

    job = models.ForeignKey(Job, null=True, on_delete=models.SET_NULL, related_name="checkpoints")
    name = models.CharField(max_length=200)
    path = models.CharField(max_length=1000, help_text="The model folder, relative to the data folder.")
    base_model = models.CharField(max_length=500)
    method = models.CharField(max_length=20, default="full")
    dataset_hash = models.CharField(max_length=64, blank=True)
    manifest_hashes = models.JSONField(default=list, blank=True)
    trajectory_ids = models.JSONField(default=list, blank=True)
    config = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class JobLog(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="logs")
    level = models.CharField(max_length=10, default="info")
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "id"]
