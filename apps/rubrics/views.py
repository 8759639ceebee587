from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from apps.core.pages import require_perm
from apps.core.roles import perm
from apps.papers.models import Paper
from apps.rubrics.models import RubricVersion
from apps.rubrics.services.diff import diff_trees
from apps.rubrics.services.editor import editor_payload
from apps.rubrics.services.errors import NodeNotFound, RubricRefused, UnsavedDraft
from apps.rubrics.services.store import export_draft, has_draft, load_draft
from apps.rubrics.services.summary import summarise
from apps.rubrics.services.versions import create_version, restore_version
from apps.rubrics.validation import FINEGRAINED_TASK_CATEGORIES, TASK_CATEGORIES


def rubric_list(request: HttpRequest) -> HttpResponse:
    versions = RubricVersion.objects.select_related("paper", "created_by").order_by("paper__title", "-number")
    page = Paginator(versions, 25).get_page(request.GET.get("page"))
    return render(request, "rubrics/list.html", {"page": page})


def editor(request: HttpRequest, slug: str) -> HttpResponse:
    """The tree editor: the whole draft goes to the page once, as JSON; edits go node by node."""
    paper = get_object_or_404(Paper, slug=slug)
    try:
        draft = load_draft(paper)
    except NodeNotFound:
        messages.error(request, "This paper has no rubric tree yet: import one first.")
        return redirect("papers:detail", slug=paper.slug)
    payload = editor_payload(draft)
    payload.update({
        "paper": {"pk": paper.pk, "slug": paper.slug, "title": paper.title},
        "categories": list(TASK_CATEGORIES),
        "finegrained": list(FINEGRAINED_TASK_CATEGORIES),
        "canEdit": request.user.has_perm(perm("edit_rubrics")),
    })
    return render(request, "rubrics/editor.html", {"paper": paper, "payload": payload,
                                                   "can_edit": payload["canEdit"]})


def versions(request: HttpRequest, slug: str) -> HttpResponse:
    """Saved versions, save-version form, and a diff between any two (or a version and the draft)."""
    paper = get_object_or_404(Paper, slug=slug)
    rows = list(paper.rubric_versions.select_related("created_by").order_by("-number"))
    a, b = request.GET.get("a", ""), request.GET.get("b", "draft")
    diff = None
    diff_error = ""
    if a:
        trees = []
        for side in (a, b):
            if side == "draft":
                trees.append(export_draft(paper) if has_draft(paper) else None)
            else:
                version = next((v for v in rows if str(v.number) == side), None)
                trees.append(version.tree if version else None)
        if None in trees:
            diff_error = "Pick two versions that exist."
        else:
            diff = diff_trees(trees[0], trees[1])
    summary = summarise(paper)
    can_edit = request.user.has_perm(perm("edit_rubrics"))
    return render(request, "rubrics/versions.html", {
        "paper": paper, "versions": rows, "a": a, "b": b, "diff": diff, "diff_error": diff_error,
        "summary": summary, "can_edit": can_edit,
        "errors": [p for p in summary.problems if p["level"] == "error"] if summary else [],
        "warnings": [p for p in summary.problems if p["level"] == "warning"] if summary else [],
        "restoring": _restore_question(paper, rows, summary, request.GET.get("restore", "")) if can_edit else None,
    })


def _restore_question(paper: Paper, rows: list[RubricVersion], summary, number: str) -> dict | None:
    """What the page asks before a restore would replace a draft with unsaved edits."""
    version = next((v for v in rows if str(v.number) == number), None)
    if version is None or summary is None or not summary.unsaved:
        return None
    changes = diff_trees(summary.version.tree, export_draft(paper)) if summary.version else None
    return {"version": version, "latest": summary.version, "changes": changes, "draft_hash": summary.draft_hash,
            "keep_number": len(rows) + 1, "restored_number": len(rows) + 2}


@require_POST
def save_version(request: HttpRequest, slug: str) -> HttpResponse:
    require_perm(request, "edit_rubrics")
    paper = get_object_or_404(Paper, slug=slug)
    try:
        version = create_version(paper, request.user, request.POST.get("message", "").strip())
    except RubricRefused as exc:
        # The page lists every problem of the draft, each with a link to its node.
        messages.error(request, f"Not saved: {exc.message} (listed under Problems, each with a link to its node).")
    except NodeNotFound as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Saved version {version.number}.")
    return redirect("rubrics:versions", slug=paper.slug)


@require_POST
def restore(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    require_perm(request, "edit_rubrics")
    paper = get_object_or_404(Paper, slug=slug)
    version = get_object_or_404(RubricVersion, paper=paper, number=number)
    choice = request.POST.get("draft")
    try:
        done = restore_version(version, request.user, draft=choice if choice in ("keep", "discard") else None,
                               draft_hash=request.POST.get("draft_hash", ""))
    except UnsavedDraft:
        # Edits no version holds (perhaps made after this page was loaded): ask before replacing them.
        if choice == "discard":
            messages.error(request, "The draft changed since you chose to discard it: look again before restoring.")
        return redirect(f"{reverse('rubrics:versions', args=[paper.slug])}?restore={number}#restore-confirm")
    except RubricRefused as exc:
        if choice != "keep":
            raise  # the version itself is refused: the error page says why (400)
        messages.error(request, f"Not restored: the draft cannot be kept as a version. {exc.message} (listed under "
                                "Problems, each with a link to its node), or discard the draft's edits.")
        return redirect(f"{reverse('rubrics:versions', args=[paper.slug])}?restore={number}#restore-confirm")
    kept = f"Kept the draft's edits as version {done.kept.number}; " if done.kept else ""
    messages.success(request, f"{kept}Restored version {number} as version {done.version.number}.")
    return redirect("rubrics:versions", slug=paper.slug)
