"""Rubric JSON in: parse and validate a PaperBench tree, hash it, and problems as JSON."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apps.rubrics.models import dumps_compact
from apps.rubrics.paperbench import FlatNode, RubricFormatError, flatten, load_json_bytes
from apps.rubrics.services.errors import RubricRefused
from apps.rubrics.validation import Problem, errors, validate_json


def tree_hash(tree: Mapping[str, Any]) -> str:
    """Content hash of a PaperBench tree: key order counts, as it does for exact export."""
    return hashlib.sha256(dumps_compact(dict(tree)).encode()).hexdigest()


@dataclass(slots=True)
class ParsedRubric:
    tree: dict[str, Any]
    nodes: list[FlatNode]
    warnings: list[Problem]


def parse_rubric(data: bytes) -> ParsedRubric:
    """Parse and validate rubric JSON bytes; raises ``RubricRefused`` listing every error."""
    try:
        tree = load_json_bytes(data)
    except RubricFormatError as exc:
        raise RubricRefused(exc.message, [Problem("error", "file", None, "invalid_json", exc.message)]) from None
    return parse_rubric_value(tree)


def parse_rubric_value(tree: Any) -> ParsedRubric:
    problems = validate_json(tree)
    bad = errors(problems)
    if bad:
        raise RubricRefused(f"The rubric has {len(bad)} error{'s' if len(bad) != 1 else ''}", problems)
    return ParsedRubric(tree, flatten(tree), [p for p in problems if p.level == "warning"])
