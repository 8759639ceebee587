from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from apps.core.pages import require_perm
from apps.core.roles import perm
from apps.papers.forms import PaperFilterForm, PaperForm, PaperImportForm
from apps.papers.markdown import render_markdown
from apps.papers.models import Paper
from apps.papers.services import BundleError, BundleTooLarge, StalePaper, import_paper, read_paper_zip, update_paper
from apps.rubrics.services.errors import RubricRefused
from apps.rubrics.services.summary import summarise
from apps.rubrics.validation import problem_dict


def paper_list(request: HttpRequest) -> HttpResponse:
    papers = Paper.objects.annotate(
        n_versions=Count("rubric_versions", distinct=True), n_trajectories=Count("trajectories", distinct=True)
    ).order_by("title", "pk")
    filters = PaperFilterForm(request.GET)
    values = filters.cleaned_data if filters.is_valid() else {}
    q = (values.get("q") or "").strip()
    if q:
        papers = papers.filter(Q(title__icontains=q) | Q(slug__icontains=q) | Q(arxiv_id__icontains=q)
                               | Q(abstract__icontains=q))
    split = values.get("split") or ""
    if split:
        papers = papers.filter(split=split)
    if status := values.get("status"):
        papers = papers.filter(status=status)
    if tag := (values.get("tag") or "").strip():
        # Tags are a small JSON list; a contains lookup works on SQLite and PostgreSQL alike.
        papers = papers.filter(tags__icontains=f'"{tag}"')
    page = Paginator(papers, 25).get_page(request.GET.get("page"))
    return render(request, "papers/list.html", {
        "page": page, "q": q, "split": split, "splits": Paper.Split.choices, "filters": filters,
        "can_import": request.user.has_perm(perm("edit_papers")),
    })


def paper_detail(request: HttpRequest, slug: str) -> HttpResponse:
    paper = get_object_or_404(Paper, slug=slug)
    return render(request, "papers/detail.html", {
        "paper": paper,
        "paper_html": render_markdown(paper.markdown),
        "addendum_html": render_markdown(paper.addendum),
        "judge_addendum_html": render_markdown(paper.judge_addendum),
        "summary": summarise(paper),
        "versions": paper.rubric_versions.select_related("created_by").order_by("-number")[:5],
        "trajectories": paper.trajectories.order_by("-id")[:20],
        "judge_runs": paper.judge_runs.select_related("rubric_version").order_by("-created_at")[:20],
        "can_edit": request.user.has_perm(perm("edit_rubrics")),
        "can_edit_paper": request.user.has_perm(perm("edit_papers")),
    })


def paper_import(request: HttpRequest) -> HttpResponse:
    require_perm(request, "edit_papers")
    problems: list[dict] = []
    limit = settings.KLONG_MAX_UPLOAD_BYTES
    if request.method == "POST":
        form = PaperImportForm(request.POST, request.FILES)
        if form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                if upload.size > limit:
                    raise BundleTooLarge(f"The upload is larger than the limit of {limit:,} bytes.")
                bundle = read_paper_zip(upload, upload.name, limit)
                result = import_paper(bundle, request.user, slug=form.cleaned_data.get("slug") or None)
            except BundleError as exc:
                form.add_error("file", str(exc))
            except RubricRefused as exc:
                form.add_error("file", f"Import refused, nothing was stored: {exc.message}.")
                problems = [problem_dict(p) for p in exc.problems]
            else:
                verb = "Imported" if result.created else "Updated"
                messages.success(request, f"{verb} {result.paper.slug}: {result.node_count} nodes"
                                          + (f", {len(result.warnings)} warnings" if result.warnings else "") + ".")
                for warning in result.warnings[:20]:
                    messages.warning(request, f"{warning.path}: {warning.message}")
                return redirect("papers:detail", slug=result.paper.slug)
    else:
        form = PaperImportForm()
    status = 400 if form.errors else 200
    return render(request, "papers/import.html", {"form": form, "problems": problems, "limit": limit},
                  status=status)


def paper_edit(request: HttpRequest, slug: str) -> HttpResponse:
    """Edit a paper's metadata; a save based on a stale revision comes back (409) with both edits merged."""
    require_perm(request, "edit_papers")
    paper = get_object_or_404(Paper, slug=slug)
    form = PaperForm(request.POST or None, request.FILES or None, instance=paper)
    status = 400 if form.errors else 200
    if request.method == "POST" and form.is_valid():
        try:
            update_paper(paper, form.cleaned_data["revision"], form.changes(),
                         pdf=form.cleaned_data.get("pdf_upload"))
        except StalePaper as exc:
            form, paper, status = form.after_conflict(exc.current), exc.current, 409
        else:
            messages.success(request, "Saved.")
            return redirect("papers:detail", slug=paper.slug)
    return render(request, "papers/edit.html", {"form": form, "paper": paper}, status=status)
