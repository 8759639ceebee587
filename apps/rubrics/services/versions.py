"""Rubric versions: numbered, immutable trees that judges grade against; import and restore."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from django.db import transaction
from django.db.models import Max

from apps.papers.models import Paper
from apps.rubrics.models import RubricVersion, dumps_compact
from apps.rubrics.paperbench import flatten, leaf_mask
from apps.rubrics.services.errors import RubricRefused, UnsavedDraft
from apps.rubrics.services.parsing import ParsedRubric, tree_hash
from apps.rubrics.services.store import export_draft, has_draft, lock_paper, replace_draft
from apps.rubrics.validation import errors, validate_tree


def latest_version(paper: Paper) -> RubricVersion | None:
    return paper.rubric_versions.order_by("-number").first()


@transaction.atomic
def create_version(paper: Paper, user=None, message: str = "", tree: dict[str, Any] | None = None) -> RubricVersion:
    """Save ``tree`` (default: the draft) as the paper's next numbered, immutable version.

    A tree with errors is refused: versions are what judges grade against, so each one must be
    a valid PaperBench rubric. The draft may hold errors while a curator works.
    """
    lock_paper(paper)
    if tree is None:
        tree = export_draft(paper)
    nodes = flatten(tree)
    bad = errors(validate_tree(nodes))
    if bad:
        raise RubricRefused(f"This tree has {len(bad)} error{'s' if len(bad) != 1 else ''}; fix them first", bad)
    number = (paper.rubric_versions.aggregate(m=Max("number"))["m"] or 0) + 1
    text = dumps_compact(tree)
    return RubricVersion.objects.create(
        paper=paper, number=number, message=message[:500], tree_json=text,
        content_hash=hashlib.sha256(text.encode()).hexdigest(), node_count=len(nodes),
        leaf_count=sum(leaf_mask(nodes)), created_by=user if user is not None and user.is_authenticated else None,
    )


@transaction.atomic
def import_rubric_tree(paper: Paper, parsed: ParsedRubric, user=None, message: str = "Imported") -> RubricVersion | None:
    """Make an already validated tree the draft and save it as a version (unless unchanged)."""
    replace_draft(paper, parsed.nodes)
    last = latest_version(paper)
    if last is not None and last.content_hash == tree_hash(parsed.tree):
        return None
    return create_version(paper, user, message, parsed.tree)


DraftChoice = Literal["keep", "discard"]


@dataclass(slots=True)
class Restored:
    version: RubricVersion  # the restored tree, saved as the newest version
    kept: RubricVersion | None = None  # the draft's unsaved edits, saved first when asked to


def unsaved_draft_hash(paper: Paper) -> str | None:
    """The draft's hash when it holds edits that no version has (it differs from the latest), else None."""
    if not has_draft(paper):
        return None
    current = tree_hash(export_draft(paper))
    last = latest_version(paper)
    return None if last is not None and last.content_hash == current else current


@transaction.atomic
def restore_version(version: RubricVersion, user=None, *, draft: DraftChoice | None = None,
                    draft_hash: str = "") -> Restored:
    """Make an old version the draft again and record that as a new version.

    A draft with unsaved edits is never replaced silently: ``draft="keep"`` saves it as a version
    first, ``draft="discard"`` drops it only if it is still the draft the user saw (``draft_hash``);
    otherwise ``UnsavedDraft`` asks.
    """
    paper = version.paper
    lock_paper(paper)
    kept = None
    unsaved = unsaved_draft_hash(paper)
    if unsaved is not None:
        if draft == "keep":
            kept = create_version(paper, user, f"Draft kept before restoring version {version.number}")
        elif draft != "discard" or draft_hash != unsaved:
            last = latest_version(paper)
            raise UnsavedDraft(last.number if last else None, unsaved)
    tree = version.tree
    replace_draft(paper, flatten(tree))
    return Restored(create_version(paper, user, f"Restored version {version.number}", tree), kept)
