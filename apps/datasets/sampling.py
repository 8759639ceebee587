"""Rejection sampling of teacher runs: which judged runs a distillation keeps, and its figures.

Pure Python. A run is kept when its judged score reaches the threshold and, with ``top_k``,
when it is among the k best of its paper that reach it (ties go to the earlier run, so the same
scores always keep the same runs). A run that was never judged (the agent failed, nothing was
submitted, the judge failed) or that the monitor flagged is never kept: a flagged run scores 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RunScore:
    paper: str
    index: int
    score: float | None  # None: not judged
    flagged: bool = False
    cost_usd: float = 0.0

    @property
    def key(self) -> tuple[str, int]:
        return (self.paper, self.index)


@dataclass(frozen=True, slots=True)
class Verdict:
    kept: bool
    reason: str


def select_runs(runs: Iterable[RunScore], threshold: float | None, top_k: int | None) -> dict[tuple[str, int], Verdict]:
    if threshold is None and top_k is None:
        raise ValueError("give a threshold, a top-k, or both")
    verdicts: dict[tuple[str, int], Verdict] = {}
    passing: dict[str, list[RunScore]] = {}
    for run in runs:
        if run.flagged:
            verdicts[run.key] = Verdict(False, "disqualified: the monitor flagged a blacklisted URL (score 0)")
        elif run.score is None:
            verdicts[run.key] = Verdict(False, "not judged")
        elif threshold is not None and run.score < threshold:
            verdicts[run.key] = Verdict(False, f"score {run.score:.3f} < threshold {threshold:g}")
        else:
            passing.setdefault(run.paper, []).append(run)
    for paper_runs in passing.values():
        ranked = sorted(paper_runs, key=lambda r: (-(r.score or 0.0), r.index))
        for rank, run in enumerate(ranked, start=1):
            if top_k is not None and rank > top_k:
                verdicts[run.key] = Verdict(False, f"rank {rank} of its paper, beyond top-{top_k}")
            else:
                why = f"score {run.score:.3f}" + (f" >= {threshold:g}" if threshold is not None else "")
                verdicts[run.key] = Verdict(True, why + (f", rank {rank} <= top-{top_k}" if top_k is not None else ""))
    return verdicts


def histogram(scores: Iterable[float], bins: int = 10) -> list[int]:
    """Counts of scores in ``bins`` equal bins over [0, 1]; a score of 1.0 falls in the last."""
    counts = [0] * bins
    for score in scores:
        counts[min(bins - 1, max(0, int(score * bins)))] += 1
    return counts


def summarise(runs: list[RunScore], verdicts: dict[tuple[str, int], Verdict]) -> dict[str, object]:
    """Acceptance rate (kept / runs), judged runs, per-paper counts, scores and cost."""
    kept = [r for r in runs if verdicts.get(r.key, Verdict(False, "")).kept]
    judged = [r for r in runs if r.score is not None]
    per_paper: dict[str, dict[str, int]] = {}
    for run in runs:
        row = per_paper.setdefault(run.paper, {"runs": 0, "judged": 0, "kept": 0})
        row["runs"] += 1
        row["judged"] += run.score is not None
        row["kept"] += verdicts.get(run.key, Verdict(False, "")).kept
    scores = [r.score for r in judged if r.score is not None]
    return {
        "runs": len(runs), "judged": len(judged), "kept": len(kept),
        "acceptance_rate": len(kept) / len(runs) if runs else 0.0,
        "mean_score": sum(scores) / len(scores) if scores else None,
        "histogram": histogram(scores), "per_paper": per_paper,
        "cost_usd": round(sum(r.cost_usd for r in runs), 6),
    }
