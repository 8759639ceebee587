"""Rubric test data built in code, plus the path of the shared PaperBench samples (read in place)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apps.papers.models import Paper
from apps.rubrics.services.parsing import parse_rubric_value
from apps.rubrics.services.versions import import_rubric_tree

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "paperbench"
SAMPLE_FILES = sorted(SAMPLES.glob("*/*.json"))


def leaf(node_id: str, requirements: str = "", weight: int = 1, category: str = "Code Development") -> dict[str, Any]:
    return {"id": node_id, "requirements": requirements or f"Leaf {node_id} is done", "weight": weight,
            "sub_tasks": [], "task_category": category, "finegrained_task_category": None}


def inner(node_id: str, children: list[dict[str, Any]], weight: int = 1, requirements: str = "") -> dict[str, Any]:
    return {"id": node_id, "requirements": requirements or f"Node {node_id} is reproduced", "weight": weight,
            "sub_tasks": children, "task_category": None, "finegrained_task_category": None}


def small_tree() -> dict[str, Any]:
    """root -> a (a1, a2), b (leaf), c (c1)."""
    return inner("root", [
        inner("a", [leaf("a1"), leaf("a2", weight=3, category="Code Execution")], weight=2),
        leaf("b", category="Result Analysis"),
        inner("c", [leaf("c1")]),
    ])


def make_paper(tree: dict[str, Any] | None = None, slug: str = "paper", user=None) -> Paper:
    """A paper whose draft and version 1 are ``tree`` (default: ``small_tree()``)."""
    paper = Paper.objects.create(slug=slug, title=f"Paper {slug}")
    import_rubric_tree(paper, parse_rubric_value(tree or small_tree()), user, "v1")
    return paper


def pk_of(paper: Paper, node_id: str) -> int:
    return paper.rubric_nodes.get(node_id=node_id).pk
