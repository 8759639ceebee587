"""Rubric figures on the largest sample tree (bam) and a synthetic 2,000-leaf tree.

Import, full-tree GET, single-node PATCH (server time, through the whole Django stack) and
re-scoring, each next to a baseline measured in the same run:

- import vs ``json.loads`` of the same file (the floor any importer pays);
- tree GET vs ``json.dumps`` of the tree (what serving a stored file costs);
- node PATCH vs PaperBench's editor, which rewrites the whole indented JSON file per edit;
- re-scoring vs a naive recursive scorer over the nested JSON.

Runs on the embedded defaults (SQLite + the embedded Redis) in a temporary data folder.
"""

from __future__ import annotations

import json
import statistics
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _django import admin_client, timed_ms  # first: sets up Django on the embedded defaults in a fresh folder
from django.conf import settings
from django.test import Client

from apps.papers.services import PaperBundle, import_paper
from apps.rubrics.paperbench import flatten, leaf_mask
from apps.rubrics.scoring import ScoringPlan

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "paperbench"
BAM = SAMPLES / "rubrics" / "bam.rubric.json"



def median(func: Callable[[], Any], repeat: int) -> float:
    return statistics.median(timed_ms(func, repeat))


def line(name: str, value: float, unit: str, target: str, baseline: tuple[str, float] | None = None) -> None:
    extra = ""
    if baseline is not None:
        label, base = baseline
        ratio = value / base if base else float("inf")
        extra = f"; baseline {label}: {base:.3f} {unit}, ratio {ratio:.1f}x"
    print(f"{name}: {value:.3f} {unit} (target: {target}{extra})", flush=True)


def synthetic_tree(leaves: int = 2000, fanout: int = 8) -> dict[str, Any]:
    """A balanced PaperBench-shaped tree with ``leaves`` leaves (depth grows with the count)."""
    def node(children: list[dict[str, Any]] | None, i: int) -> dict[str, Any]:
        return {"id": str(uuid.UUID(int=i, version=4)), "requirements": f"Requirement {i}: the step is reproduced",
                "weight": 1 + i % 3, "sub_tasks": children or [],
                "task_category": None if children else ("Code Development", "Code Execution")[i % 2],
                "finegrained_task_category": None if children else "Method Implementation"}

    counter = 0
    level = []
    for _ in range(leaves):
        counter += 1
        level.append(node(None, counter))
    while len(level) > 1:
        grouped = []
        for start in range(0, len(level), fanout):
            counter += 1
            grouped.append(node(level[start:start + fanout], counter))
        level = grouped
    return level[0]


def naive_score(node: dict[str, Any], scores: dict[str, float]) -> float:
    """The textbook recursive scorer (what a first implementation looks like)."""
    kids = node["sub_tasks"]
    if not kids:
        return scores.get(node["id"], 0.0)
    total = sum(k["weight"] for k in kids)
    return sum(naive_score(k, scores) * k["weight"] for k in kids) / total if total else 0.0


def bench_tree(label: str, data: bytes, client: Client) -> None:
    tree = json.loads(data)
    counter = iter(range(10_000))

    def do_import():
        return import_paper(PaperBundle(f"bench-{label}-{next(counter)}", data, f"{label}.json"))

    import_ms = median(do_import, 5)
    loads_ms = median(lambda: json.loads(data), 20)
    line(f"rubric_import_{label}", import_ms, "ms", "< 1000 ms", ("json.loads", loads_ms))

    paper = do_import().paper
    url = f"/api/papers/{paper.pk}/tree/"
    assert client.get(url).status_code == 200
    get_ms = median(lambda: client.get(url), 20)
    dumps_ms = median(lambda: json.dumps(tree), 20)
    line(f"rubric_tree_get_{label}", get_ms, "ms", "< 150 ms", ("json.dumps of the tree", dumps_ms))

    leaf = paper.rubric_nodes.filter(children__isnull=True).order_by("pk").first()
    state = {"version": leaf.version, "n": 0}

    def patch():
        state["n"] += 1
        response = client.patch(f"/api/rubric-nodes/{leaf.pk}/",
                                {"version": state["version"], "requirements": f"Edited {state['n']}"},
                                content_type="application/json")
        state["version"] = response.json()["version"]

    patch_ms = median(patch, 30)
    target = Path(settings.DATA_DIR) / f"{label}.rubric.json"

    def rewrite_file():
        # PaperBench's editor: every edit writes the whole indented file in place.
        target.write_text(json.dumps(tree, indent=4))

    rewrite_ms = median(rewrite_file, 20)
    line(f"rubric_node_patch_{label}", patch_ms, "ms", "< 30 ms", ("rewrite whole file", rewrite_ms))


def bench_scoring() -> None:
    tree = synthetic_tree(2000)
    nodes = flatten(tree)
    is_leaf = leaf_mask(nodes)
    leaf_scores = {n.index: float(n.index % 2) for n in nodes if is_leaf[n.index]}
    by_id = {nodes[i].node_id: s for i, s in leaf_scores.items()}
    plan = ScoringPlan.from_nodes(nodes)
    plan.score(leaf_scores)  # warm the per-category bookkeeping once, as the editor does
    score_ms = median(lambda: plan.score(leaf_scores), 50)
    naive_ms = median(lambda: naive_score(tree, by_id), 50)
    line("rubric_rescore_2000_leaves", score_ms, "ms", "< 5 ms", ("naive recursive scorer", naive_ms))


def main() -> None:
    with admin_client() as client:
        if BAM.is_file():
            bench_tree("bam", BAM.read_bytes(), client)
        else:
            print(f"# {BAM} not found: bam figures skipped", flush=True)
        bench_tree("synthetic_2000", json.dumps(synthetic_tree(2000), indent=4).encode(), client)
        bench_scoring()


if __name__ == "__main__":
    main()
