"""Judge audit figures, each next to a baseline measured in the same run.

- side-by-side page for a 2,000-leaf tree with three judge runs (server time through the whole
  Django stack) vs the existing single-run judge page of the same tree;
- one human grade saved through the API (leaf grade, re-scored human run, audit items) vs the
  bare ORM ``update_or_create`` of a LeafGrade (the floor of any save);
- the judge report's correlations with 1,000 bootstrap resamples over 300 submissions vs the
  same with the textbook O(n^2) Kendall's tau.

Runs on the embedded defaults (SQLite + the embedded Redis) in a temporary data folder.
"""

from __future__ import annotations

import random
import statistics
import time

from _django import admin_client, timed_ms  # first: sets up Django on the embedded defaults in a fresh folder
from bench_rubrics import line, synthetic_tree
from django.test import Client

from apps.audit import agreement


def median(func, repeat: int) -> float:
    return statistics.median(timed_ms(func, repeat))


def quadratic_kendall(x, y):
    """The textbook tau-b loop over every pair."""
    n = len(x)
    concordant = discordant = tied_x = tied_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            tied_x += dx == 0
            tied_y += dy == 0
            if dx and dy:
                concordant += (dx > 0) == (dy > 0)
                discordant += (dx > 0) != (dy > 0)
    pairs = n * (n - 1) // 2
    denominator = ((pairs - tied_x) * (pairs - tied_y)) ** 0.5
    return (concordant - discordant) / denominator if denominator else None


def bench_pages(client: Client) -> None:
    from apps.judging.models import JudgeRun, LeafGrade
    from apps.papers.models import Paper
    from apps.rubrics.paperbench import flatten, leaf_mask
    from apps.rubrics.services.versions import create_version

    paper = Paper.objects.create(slug="bench-audit", title="Bench audit")
    version = create_version(paper, message="bench", tree=synthetic_tree(2000))
    nodes = flatten(version.tree)
    leaves = [i for i, leaf in enumerate(leaf_mask(nodes)) if leaf]
    rng = random.Random(0)
    runs = []
    for name in ("judge-a", "judge-b", "judge-c"):
        run = JudgeRun.objects.create(paper=paper, rubric_version=version, rubric_hash=version.content_hash,
                                      judge_name=name, submission="submissions/bench")
        LeafGrade.objects.bulk_create([
            LeafGrade(run=run, node_index=i, node_id=str(nodes[i].node_id), score=float(rng.random() < 0.6),
                      explanation="Expectations: the step. Reality: found it in train.py, line 40.", calls=1)
            for i in leaves
        ], batch_size=1000)
        runs.append(run)
    ids = ",".join(str(r.pk) for r in runs)
    compare_url = f"/audit/compare/?runs={ids}"
    assert client.get(compare_url).status_code == 200
    compare_ms = median(lambda: client.get(compare_url), 5)
    detail_ms = median(lambda: client.get(f"/judging/runs/{runs[0].pk}/"), 5)
    line("audit_compare_page_2000_leaves_3_runs", compare_ms, "ms", "< 1000 ms",
         ("single-run judge page", detail_ms))

    counter = iter(range(10**6))

    def grade():
        k = next(counter)
        response = client.post("/api/audit/grades/", {"run": runs[0].pk, "node_index": leaves[k % len(leaves)],
                                                      "score": k % 2}, content_type="application/json")
        assert response.status_code == 201, response.content

    grade_ms = median(grade, 30)
    human = JudgeRun.objects.get(kind="human")

    def bare_save():
        k = next(counter)
        LeafGrade.objects.update_or_create(run=human, node_index=leaves[k % len(leaves)], defaults={"score": k % 2})

    bare_ms = median(bare_save, 30)
    line("audit_grade_save_2000_leaves", grade_ms, "ms", "< 100 ms", ("bare LeafGrade update_or_create", bare_ms))


def bench_report() -> None:
    rng = random.Random(1)
    x = [rng.random() for _ in range(300)]
    y = [v + rng.gauss(0, 0.1) for v in x]
    start = time.perf_counter()
    agreement.correlations(x, y, n_resamples=1000)
    ours = (time.perf_counter() - start) * 1000
    original = agreement.CORRELATIONS["kendall"]
    agreement.CORRELATIONS["kendall"] = quadratic_kendall
    try:
        start = time.perf_counter()
        agreement.correlations(x, y, n_resamples=1000)
        textbook = (time.perf_counter() - start) * 1000
    finally:
        agreement.CORRELATIONS["kendall"] = original
    line("audit_report_correlations_300_submissions_1000_resamples", ours, "ms", "< 5000 ms",
         ("textbook O(n^2) Kendall", textbook))


def main() -> None:
    with admin_client() as client:
        bench_pages(client)
        bench_report()


if __name__ == "__main__":
    main()
