from __future__ import annotations

from django.conf import settings
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
    # Moved on by every write; an edit names the revision it read and is refused (409) when stale.
    revision = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title

    @property
    def etag(self) -> str:
        """The revision as an HTTP entity tag: an edit names it in If-Match."""
        return f'"{self.revision}"'

    def save(self, *args, **kwargs) -> None:
        """Any save of a stored paper (an import, a PDF attached) moves its revision on too."""
        if self._state.adding:
            super().save(*args, **kwargs)
            return
        self.revision = models.F("revision") + 1
        if kwargs.get("update_fields") is not None:
            kwargs["update_fields"] = {*kwargs["update_fields"], "revision"}
        super().save(*args, **kwargs)
        self.refresh_from_db(fields=["revision"])


class PaperCandidate(models.Model):
    """A paper proposed for Research-Factory, read from an arXiv, BibTeX or CSV list.

    Candidates are triaged (kept or rejected) on the intake page; a kept one becomes a ``Paper``
    when its PDF is attached and converted to Markdown.
    """

    class Status(models.TextChoices):
        NEW = "new", "New"
        KEPT = "kept", "Kept"
        REJECTED = "rejected", "Rejected"
        IMPORTED = "imported", "Imported"

    title = models.CharField(max_length=500, blank=True)
    arxiv_id = models.CharField(max_length=40, blank=True, db_index=True)
    # Duplicate check: arXiv id without version, else the normalised title (see candidates.py).
    key = models.CharField(max_length=600, unique=True)
    authors = models.TextField(blank=True)
    venue = models.CharField(max_length=100, blank=True, db_index=True, help_text="Normalised: NeurIPS, ICML, ICLR...")
    venue_raw = models.CharField(max_length=500, blank=True)
    year = models.PositiveSmallIntegerField(null=True, blank=True, db_index=True)
    citations = models.PositiveIntegerField(null=True, blank=True)
    url = models.URLField(max_length=500, blank=True)
    pdf_url = models.URLField(max_length=500, blank=True)
    abstract = models.TextField(blank=True)
    extra = models.JSONField(default=dict, blank=True)
    source_format = models.CharField(max_length=10)
    source_name = models.CharField(max_length=300, blank=True)
    source_line = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.NEW, db_index=True)
    note = models.TextField(blank=True)
    paper = models.ForeignKey(Paper, null=True, blank=True, on_delete=models.SET_NULL, related_name="candidates")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-year", "-citations", "title"]

    def __str__(self) -> str:
        return self.title or self.arxiv_id
