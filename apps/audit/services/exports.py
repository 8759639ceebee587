"""The audit's files: a comparison as JSON or CSV, the judge report as CSV, all through one CSV writer."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from apps.audit.services.comparison import Comparison


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    return {
        "paper": comparison.base.paper.slug,
        "rubric_version": comparison.version.number,
        "sources": [
            {"run": s.run.pk if s.run else None, "label": s.label, "kind": s.kind, "root_score": s.scores[0],
             "graded_leaves": s.graded, "unmapped_grades": s.lost}
            for s in comparison.sources
        ],
        "disagreements": comparison.disagreements,
        "metrics": comparison.metrics,
        "nodes": [
            {"index": r["index"], "number": r["number"], "id": r["node_id"], "requirements": r["requirements"],
             "weight": r["weight"], "category": r["category"] or None, "leaf": r["leaf"], "disagree": r["disagree"],
             "leaves_compared_below": r["compared_below"], "leaves_disagreeing_below": r["disagree_below"],
             "scores": r["node_scores"] if not r["leaf"] else [c.score if c else None for c in r["cells"]],
             "explanations": [c.explanation if c else None for c in r["cells"]] if r["leaf"] else None}
            for r in comparison.rows
        ],
    }


def _csv_safe(value: Any) -> Any:
    # Spreadsheet formula injection: model output could start a cell with = + - @.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Every CSV export: header and body cells alike pass the formula guard (headers carry judge names)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in (header, *rows):
        writer.writerow([_csv_safe(v) for v in row])
    return buffer.getvalue()


def comparison_csv(comparison: Comparison) -> str:
    """One row per node: per source its score (leaf 0/1 or empty, inner nodes aggregated) and explanation."""
    header = ["index", "number", "node_id", "leaf", "category", "weight", "requirements", "disagree"]
    for s in comparison.sources:
        header += [f"{s.label} score", f"{s.label} explanation"]
    body = []
    for r in comparison.rows:
        row = [r["index"], r["number"], r["node_id"], int(r["leaf"]), r["category"], r["weight"], r["requirements"],
               int(r["disagree"])]
        for k in range(len(comparison.sources)):
            if r["leaf"]:
                cell = r["cells"][k]
                row += ["" if cell is None or cell.score is None else cell.score, cell.explanation if cell else ""]
            else:
                row += [round(r["node_scores"][k], 6), ""]
        body.append(row)
    return write_csv(header, body)


def report_csv(report: dict[str, Any]) -> str:
    """The per-submission table, then the summary as key/value rows."""
    body: list[list[Any]] = [[s["label"], s["reference"], s["candidate"], s["difference"], s["reference_cost"],
                              s["candidate_cost"]] for s in report["submissions"]]
    body.append([])
    for name, c in report["correlations"].items():
        body.append([name, c["value"], c["ci_low"], c["ci_high"]])
    overall = report["leaves"]["overall"]
    body.append(["macro_f1", overall["f1"]])
    body.append(["kappa", overall["kappa"]])
    body.append(["order_flips", len(report["flips"]), "of", report["pairs"]])
    body.append(["verdict", report["verdict"], report["metric"], report["threshold"]])
    return write_csv(["submission", f"reference: {report['reference']}", f"candidate: {report['candidate']}",
                      "difference", "reference cost", "candidate cost"], body)

