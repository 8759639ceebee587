from __future__ import annotations

from django.db import models


class Paper(models.Model):
    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        EVAL = "eval", "Eval"
        HELD_OUT = "held_out", "Held-out"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        CURATED = "curated", "Curated"
        ARCHIVED = "archived", "Archived"

    slug = models.SlugField(max_length=200, unique=True, help_text="PaperBench paper id, e.g. 'bam'.")
    title = models.CharField(max_length=500)
    arxiv_id = models.CharField(max_length=40, blank=True)
    venue = models.CharField(max_length=100, blank=True)
    year = models.PositiveSmallIntegerField(null=True, blank=True)
    abstract = models.TextField(blank=True)
    markdown = models.TextField(blank=True, help_text="The paper as Markdown.")
    pdf = models.FileField(upload_to="papers/pdf/", blank=True, help_text="The paper as uploaded, if a PDF.")
    addendum = models.TextField(blank=True)
    judge_addendum = models.TextField(blank=True)
    blacklist = models.JSONField(default=list, blank=True, help_text="URLs the agent must not use.")
    split = models.CharField(max_length=10, choices=Split.choices, default=Split.TRAIN)
    tags = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title
