"""What the tree editor reads: node rows as JSON, the draft's problems and its change stamp."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Max, Min, Q, Sum

from apps.papers.models import Paper
from apps.rubrics.models import RubricNode
from apps.rubrics.scoring import shares
from apps.rubrics.services.store import DraftTree
from apps.rubrics.validation import problem_dict, validate_tree


def node_dict(node: RubricNode) -> dict[str, Any]:
    """One row as the editor and the API see it."""
    return {"pk": node.pk, "parent": node.parent_id, "position": node.position, "version": node.version,
            "id": node.node_id, "requirements": node.requirements, "weight": node.weight,
            "task_category": node.task_category, "finegrained_task_category": node.finegrained_task_category}


def draft_stamp(draft: DraftTree) -> str:
    """A fingerprint that changes with every write to the draft: each write bumps a version,
    adds rows (a higher pk) or removes rows. Lets an open editor notice others' changes."""
    return f"{len(draft.pks)}-{max(draft.pks)}-{sum(draft.versions)}"


def current_stamp(paper: Paper) -> dict[str, Any]:
    """``draft_stamp`` from one aggregate query, without reading the tree, and the root's pk: a
    new root means the whole draft was replaced (a restore, an import), not edited."""
    agg = RubricNode.objects.filter(paper=paper).aggregate(
        n=Count("id"), top=Max("id"), total=Sum("version"), root=Min("id", filter=Q(parent__isnull=True)))
    return {"stamp": f"{agg['n']}-{agg['top']}-{agg['total'] or 0}", "root": agg["root"]}


def draft_problems(draft: DraftTree) -> list[dict[str, Any]]:
    return [problem_dict(p, draft.pks) for p in validate_tree(draft.nodes)]


def editor_payload(draft: DraftTree) -> dict[str, Any]:
    """Flat pre-order node list with pks, versions and effective weights, for the editor page."""
    node_shares = shares(draft.nodes)
    pks = draft.pks
    out = []
    for i, n in enumerate(draft.nodes):
        out.append({"pk": pks[i], "parent": pks[n.parent] if n.parent is not None else None,
                    "version": draft.versions[i], "id": n.node_id, "requirements": n.requirements,
                    "weight": n.weight, "task_category": n.task_category,
                    "finegrained_task_category": n.finegrained_task_category, "share": node_shares[i]})
    return {"nodes": out, "problems": draft_problems(draft), "stamp": draft_stamp(draft)}
