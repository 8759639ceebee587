"""The side-by-side grid's rows as HTML, built in Python.

A 2,000-leaf tree with three sources is ~10,000 cells: Django's template engine took over a
second for them (bench/bench_audit.py), string building takes a fraction of that. Every value
that comes from a tree, a judge or a human goes through ``escape``; this module is the only
place the grid's markup is written (templates/audit/compare.html includes its output).
"""

from __future__ import annotations

from django.urls import reverse
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from apps.audit.services.cells import Cell
from apps.audit.services.comparison import Comparison

EXPLANATION_CHARS = 160
MY_CELL = ' data-testid="my-cell"'
LEAF_FOCUS = ' tabindex="-1"'
QUEUE_DOT = '<span class="queue-dot" title="assigned to you">●</span> '


def _truncate(text: str, limit: int = EXPLANATION_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cell(cell: Cell | None, mine: bool, prompt_url: str | None, panel_title: str) -> str:
    parts = [f'<td class="cell{" mine" if mine else ""}"{MY_CELL if mine else ""}>']
    if cell is not None and not cell.valid:
        parts.append(f'<span class="badge state-failed" title="{escape(cell.invalid_reason)}">invalid</span>')
    elif cell is not None and cell.score is not None:
        value = f"{cell.score:.0f}"
        parts.append(f'<span class="score s{value}" data-role="score">{value}</span>')
    else:
        parts.append('<span class="score none" data-role="score">—</span>')
    if mine:
        parts.append('<span class="pending" data-role="pending"></span>')
    explanation = cell.explanation if cell is not None else ""
    title = f' title="{escape(explanation)}"' if explanation else ""
    parts.append(f'<div class="expl" data-role="note"{title}>{escape(_truncate(explanation))}</div>')
    if cell is not None and cell.graded_by:
        when = cell.graded_at.strftime("%Y-%m-%d %H:%M") if cell.graded_at else ""
        parts.append(f'<div class="muted who" data-role="who">{escape(cell.graded_by)} · {when}</div>')
    elif mine:
        parts.append('<div class="muted who" data-role="who"></div>')
    if prompt_url:
        parts.append(f'<button type="button" class="link-button" data-testid="show-prompt" hx-get="{prompt_url}" '
                     f'hx-target="#leaf-panel-body" data-panel-title="{escape(panel_title)}">prompt &amp; answer</button>')
    parts.append("</td>")
    return "".join(parts)


def _below(row: dict) -> str:
    if not row["disagree_below"]:
        return ""
    return (f' <span class="badge disagree-count" data-testid="disagree-below" title="leaves below where the '
            f'sources disagree, of those graded by two or more">{row["disagree_below"]}/{row["compared_below"]} '
            f'disagree</span>')


def grid_rows(comparison: Comparison, assigned: set[int]) -> SafeString:
    """The grid's <tr> rows (see static/js/audit.js for the data attributes it relies on)."""
    leaf_url = reverse("judging:leaf", args=[0, 0])
    prefix, _, _ = leaf_url.partition("/0/leaves/0/")
    out: list[str] = []
    for row in comparison.rows:
        index, leaf = row["index"], row["leaf"]
        flag = assigned and index in assigned
        classes = ("leaf" if leaf else "inner") + (" disagree" if row["disagree"] else "")
        number = escape(row["number"])
        out.append(
            f'<tr data-testid="audit-row" data-index="{index}" data-depth="{row["depth"]}" data-leaf="{int(leaf)}" '
            f'data-category="{escape(row["category"])}" data-disagree="{int(row["disagree"])}" '
            f'data-invalid="{int(row["invalid"])}" data-assigned="{int(bool(flag))}" class="{classes}"'
            f'{LEAF_FOCUS if leaf else ""}>'
            f'<td style="padding-left: {row["depth"] * 1.0 + 0.2:.1f}rem" class="req">'
            f'{QUEUE_DOT if flag else ""}'
            f'<span class="muted">{number}</span> <span class="text">{escape(row["requirements"])}</span>'
            f'{_below(row) if not leaf else ""}</td>'
            f'<td class="muted">{escape(row["category"])}</td><td class="num">{escape(str(row["weight"]))}</td>'
        )
        for k, source in enumerate(comparison.sources):
            if not leaf:
                out.append(f'<td class="num agg">{row["node_scores"][k]:.3f}</td>')
                continue
            cell: Cell | None = row["cells"][k]
            url = None
            if cell is not None and cell.has_prompt and source.run is not None:
                url = f"{prefix}/{source.run.pk}/leaves/{cell.source_index}/"
            out.append(_cell(cell, source.mine, url, f"{source.label} · {row['number']}"))
        out.append("</tr>")
    return mark_safe("\n".join(out))  # noqa: S308 (every interpolated value above is escaped or a number)
