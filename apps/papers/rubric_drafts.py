"""Saving a model-drafted rubric tree without ever overwriting a curator's work.

A paper's rubric is an editable draft (node rows) plus immutable numbered versions; judges grade
against the latest version. A model's tree becomes the draft and a new version only while the
paper has no curated rubric: not marked curated, no version saved by a person, and no unsaved
curator edits in the draft. Otherwise the tree is kept beside the job (a file a curator can
import or diff) and the paper is left as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from apps.papers.models import Paper
from apps.rubrics.paperbench import flatten
from apps.rubrics.services.parsing import tree_hash
from apps.rubrics.services.store import export_draft, has_draft, replace_draft
from apps.rubrics.services.versions import create_version, latest_version

# Versions a drafting job saves start with this, which is how a later job tells them from a curator's.
MODEL_DRAFT_MARK = "[model draft]"


@dataclass(slots=True)
class DraftSaved:
    applied: bool
    version: int | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "version": self.version, "reason": self.reason}


def curated_reason(paper: Paper) -> str | None:
    """Why a model draft must not replace this paper's rubric, or None when it may."""
    if paper.status == Paper.Status.CURATED:
        return "the paper is marked curated"
    human = paper.rubric_versions.exclude(message__startswith=MODEL_DRAFT_MARK).order_by("-number").first()
    if human is not None:
        return f"a curator saved version {human.number}"
    if has_draft(paper):
        latest = latest_version(paper)
        if latest is None or latest.content_hash != tree_hash(export_draft(paper)):
            return "the draft has edits that were never saved as a version"
    return None


def save_model_draft(paper: Paper, tree: dict[str, Any], message: str) -> DraftSaved:
    """Make ``tree`` (already validated) the draft and a ``[model draft]`` version, unless the
    paper has a curated rubric; the check and the write happen under the paper's row lock."""
    with transaction.atomic():
        paper = Paper.objects.select_for_update().get(pk=paper.pk)
        reason = curated_reason(paper)
        if reason is not None:
            return DraftSaved(False, None, f"not applied: {reason}")
        replace_draft(paper, flatten(tree))
        version = create_version(paper, None, f"{MODEL_DRAFT_MARK} {message}"[:500], tree)
    return DraftSaved(True, version.number, "saved as the draft and a model-draft version for curators to review")
