"""A paper's rubric at a glance: counts, problems, and whether the draft differs from the latest version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apps.papers.models import Paper
from apps.rubrics.models import RubricVersion
from apps.rubrics.paperbench import leaf_mask
from apps.rubrics.services.editor import draft_problems
from apps.rubrics.services.errors import NodeNotFound
from apps.rubrics.services.parsing import tree_hash
from apps.rubrics.services.store import load_draft
from apps.rubrics.services.versions import latest_version


@dataclass(slots=True)
class RubricSummary:
    node_count: int
    leaf_count: int
    depth: int
    categories: dict[str, int]
    problems: list[dict[str, Any]]
    draft_hash: str
    version: RubricVersion | None

    @property
    def unsaved(self) -> bool:
        return self.version is None or self.version.content_hash != self.draft_hash


def summarise(paper: Paper) -> RubricSummary | None:
    """Counts, problems and whether the draft differs from the latest version."""
    try:
        draft = load_draft(paper)
    except NodeNotFound:
        return None
    is_leaf = leaf_mask(draft.nodes)
    depth = [0] * len(draft.nodes)
    categories: dict[str, int] = {}
    for n in draft.nodes:
        if n.parent is not None:
            depth[n.index] = depth[n.parent] + 1
        if is_leaf[n.index]:
            key = n.task_category or "(none)"
            categories[key] = categories.get(key, 0) + 1
    return RubricSummary(len(draft.nodes), sum(is_leaf), max(depth), dict(sorted(categories.items())),
                         draft_problems(draft), tree_hash(draft.export()), latest_version(paper))
