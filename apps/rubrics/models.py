"""Rubric storage: one editable draft tree per paper as node rows, plus immutable versions.

The draft is stored node by node so a single edit touches one row (and carries that row's
``version`` counter for optimistic concurrency). A saved version keeps the exact PaperBench
JSON text: a text column, because PostgreSQL's jsonb would re-order keys and exact export
(key order included) is a promise of the product.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.db import models

from apps.rubrics.paperbench import FlatNode, load_json_bytes


class RubricVersion(models.Model):
    """An immutable, numbered version of a paper's rubric tree (PaperBench JSON)."""

    paper = models.ForeignKey("papers.Paper", on_delete=models.CASCADE, related_name="rubric_versions")
    number = models.PositiveIntegerField()
    message = models.CharField(max_length=500, blank=True)
    # Compact json.dumps of the exact tree value; parse with ``tree`` (keeps int/float, order).
    tree_json = models.TextField()
    content_hash = models.CharField(max_length=64, db_index=True)
    node_count = models.PositiveIntegerField(default=0)
    leaf_count = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["paper", "-number"]  # noqa: RUF012 (Django compares Meta lists in migrations)
        constraints = [  # noqa: RUF012
            models.UniqueConstraint(fields=["paper", "number"], name="rubric_version_number_unique")
        ]

    def __str__(self) -> str:
        return f"{self.paper.slug} v{self.number}"

    @property
    def tree(self) -> dict[str, Any]:
        """The PaperBench JSON value, key order and number types as saved."""

        return load_json_bytes(self.tree_json.encode())


_SCALAR_CACHE: dict[str, Any] = {}


def loads_json_column(text: str) -> Any:
    # Weights and categories repeat thousands of times in a tree: decode each spelling once.
    value = _SCALAR_CACHE.get(text)
    if value is not None:
        return value
    value = json.loads(text)
    if isinstance(value, (int, float, str)) and len(text) <= 40 and len(_SCALAR_CACHE) < 4096:
        _SCALAR_CACHE[text] = value
    return value


class ExactJSONField(models.TextField):
    """A JSON value stored as its text.

    Django's JSONField is jsonb on PostgreSQL, which re-orders object keys; exact PaperBench
    export needs nested objects (judge_metadata, extra keys) to come back in file order.
    SQL NULL stands for None: whether a key exists is recorded in ``key_order``.
    """

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        return None if value is None else loads_json_column(value)

    def to_python(self, value: Any) -> Any:
        return value

    def get_prep_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, ensure_ascii=False)


class RubricNode(models.Model):
    """One node of a paper's draft rubric tree.

    Raw JSON values are kept as parsed (a weight stays int or float) so export is exact;
    ``key_order`` is the node's key order in the imported file, or null for editor-made nodes.
    """

    paper = models.ForeignKey("papers.Paper", on_delete=models.CASCADE, related_name="rubric_nodes")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    position = models.PositiveIntegerField(default=0)
    node_id = models.TextField()
    requirements = models.TextField(blank=True)
    weight = ExactJSONField()
    task_category = models.TextField(null=True, blank=True)
    finegrained_task_category = models.TextField(null=True, blank=True)
    score = ExactJSONField(null=True, blank=True)
    valid_score = ExactJSONField(null=True, blank=True)
    explanation = ExactJSONField(null=True, blank=True)
    judge_metadata = ExactJSONField(null=True, blank=True)
    extra = ExactJSONField(default=dict, blank=True)
    key_order = ExactJSONField(null=True, blank=True)
    # Bumped on every change to this node; a write must name the version it read (409 if stale).
    version = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["paper", "parent_id", "position"]  # noqa: RUF012
        indexes = [models.Index(fields=["paper", "parent", "position"], name="rubric_node_sibling_idx")]  # noqa: RUF012

    def __str__(self) -> str:
        return f"{self.node_id} ({self.paper_id})"

    # Attributes shared with FlatNode, in one place for the codec and the API.
    CONTENT_FIELDS = (
        "node_id", "requirements", "weight", "task_category", "finegrained_task_category",
        "score", "valid_score", "explanation", "judge_metadata", "extra", "key_order",
    )

    def to_flat(self, index: int, parent: int | None, position: int) -> FlatNode:
        return FlatNode(
            index, parent, position, self.node_id, self.requirements, self.weight, self.task_category,
            self.finegrained_task_category, self.score, self.valid_score, self.explanation,
            self.judge_metadata, dict(self.extra or {}), list(self.key_order) if self.key_order is not None else None,
        )


def dumps_compact(tree: dict[str, Any]) -> str:
    """The one serialisation used for storage and hashing: key order kept, no whitespace."""
    return json.dumps(tree, ensure_ascii=False, separators=(",", ":"))
