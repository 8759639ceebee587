"""Errors the rubric services raise (answered by the one mapping, apps/core/domain.py)."""

from __future__ import annotations

from apps.core.domain import Conflict, Invalid, NotFound
from apps.rubrics.models import RubricNode
from apps.rubrics.validation import Problem, problem_dict


class RubricRefused(Invalid, ValueError):
    """A tree (file, version or restore) was refused whole; ``problems`` lists every reason."""

    def __init__(self, message: str, problems: list[Problem]) -> None:
        super().__init__(message, details={"problems": [problem_dict(p) for p in problems]})
        self.problems = problems


class TreeEditError(Invalid, ValueError):
    """An edit that makes no sense for this tree (cycle, second root, bad value): a 400."""


class NodeNotFound(NotFound, LookupError):
    """The node is not in this paper's draft (deleted, or the draft was replaced)."""


class StaleNode(Conflict):
    """The node changed since the client read it: a 409 carrying the current node."""

    def __init__(self, current: RubricNode) -> None:
        super().__init__("This node was changed by someone else since you loaded it.", current)


class UnsavedDraft(Conflict):
    """Restoring would replace a draft whose edits no version holds: the user chooses first (409).

    ``draft_hash`` names the draft as it is now: discarding must name it, so edits made after
    the user looked are never discarded unseen.
    """

    def __init__(self, latest_number: int | None, draft_hash: str) -> None:
        since = f"version {latest_number}" if latest_number else "no version yet"
        super().__init__(
            f"The draft has edits that no version holds ({since}): keep them as a version first, or discard "
            "them: send draft=keep, or draft=discard with this draft_hash.",
            details={"draft_hash": draft_hash, "latest_version": latest_number},
        )
        self.latest_number = latest_number
        self.draft_hash = draft_hash
