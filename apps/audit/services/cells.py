"""A run's leaf grades laid on a target tree: one cell per leaf, mapped when versions differ."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apps.audit.services.trees import version_match
from apps.judging.models import JudgeRun
from apps.rubrics.models import RubricVersion


@dataclass(slots=True)
class Cell:
    score: float | None  # None: not graded, or graded invalid
    valid: bool = True
    graded: bool = False
    explanation: str = ""
    invalid_reason: str = ""
    graded_by: str = ""
    graded_at: Any = None
    has_prompt: bool = False
    source_index: int | None = None  # the leaf's index in the run's own version (for the prompt link)


def run_cells(run: JudgeRun, target: RubricVersion) -> tuple[dict[int, Cell], int]:
    """The run's leaf grades keyed by leaf index of ``target`` (mapped when versions differ),
    and how many of its grades found no leaf there."""
    match = version_match(target, run.rubric_version)
    cells: dict[int, Cell] = {}
    lost = 0
    rows = run.grades.values_list(
        "node_index", "score", "valid_score", "explanation", "invalid_reason", "graded_by__username", "graded_at",
        "calls",
    )
    for index, score, valid, explanation, reason, who, when, calls in rows:
        target_index = index if match is None else match.pairs.get(index)
        if target_index is None:
            lost += 1
            continue
        cells[target_index] = Cell(
            score=score if valid else None, valid=valid, graded=True, explanation=explanation or "",
            invalid_reason=reason or "", graded_by=who or "", graded_at=when, has_prompt=bool(calls),
            source_index=index,
        )
    return cells, lost


def leaf_scores(cells: dict[int, Cell]) -> dict[int, float]:
    """Scores for aggregation: an invalid or ungraded leaf counts 0, as in PaperBench."""
    return {i: c.score for i, c in cells.items() if c.score is not None}


def cell_score(cell: Cell | None) -> float | None:
    return None if cell is None else cell.score
