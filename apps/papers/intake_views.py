"""Pages of the Research-Factory paper intake: candidate list, import, one candidate."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from apps.core.pages import require_perm
from apps.core.roles import perm
from apps.papers import intake
from apps.papers.forms import AttachPdfForm, CandidateFilterForm, CandidateImportForm
from apps.papers.models import PaperCandidate


def candidate_list(request: HttpRequest) -> HttpResponse:
    filters = CandidateFilterForm(request.GET or None)
    rows = intake.filtered_candidates(filters.params() if request.GET else {}).select_related("paper")
    page = Paginator(rows, 50).get_page(request.GET.get("page"))
    venues = (PaperCandidate.objects.exclude(venue="").values_list("venue", flat=True).distinct().order_by("venue"))
    return render(request, "papers/candidates.html", {
        "page": page, "filters": filters, "total": rows.count(), "venues": list(venues),
        "can_edit": request.user.has_perm(perm("edit_papers")), "statuses": PaperCandidate.Status.choices,
        "query": request.GET.urlencode(),
    }, status=400 if filters.errors else 200)


@require_POST
def candidate_triage(request: HttpRequest) -> HttpResponse:
    """Keep or reject the ticked candidates."""
    require_perm(request, "edit_papers")
    status = request.POST.get("status", "")
    ids = [int(i) for i in request.POST.getlist("ids") if i.isdigit()]
    if not ids:
        messages.error(request, "Tick at least one candidate.")
    else:
        try:
            changed = intake.set_candidate_status(PaperCandidate.objects.filter(pk__in=ids), status)
        except ValueError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"{changed} candidate{'s' if changed != 1 else ''} marked {status}.")
    # Back to the same filtered list: only a query string, appended to our own path.
    return redirect(f"{reverse('papers:candidates')}?{request.POST.get('query', '')}")


def candidate_import(request: HttpRequest) -> HttpResponse:
    require_perm(request, "edit_papers")
    line_errors: list[dict] = []
    if request.method == "POST":
        form = CandidateImportForm(request.POST, request.FILES)
        if form.is_valid():
            upload = form.cleaned_data.get("file")
            try:
                text = intake.decode_upload(upload) if upload else form.cleaned_data["text"]
                result = intake.import_candidates(
                    text, form.cleaned_data.get("format") or "", rule=form.rule(),
                    source_name=upload.name if upload else "pasted list", user=request.user,
                )
            except intake.CandidateListError as exc:
                line_errors = exc.as_list()
                form.add_error(None, f"Nothing was imported: {len(exc.errors)} line"
                                     f"{'s' if len(exc.errors) != 1 else ''} could not be read.")
            else:
                messages.success(request, f"Imported {len(result.created)} candidates ({result.fmt}); "
                                          f"{len(result.duplicates)} already listed, {len(result.dropped)} "
                                          "dropped by the filter.")
                for record, why in result.dropped[:10]:
                    messages.info(request, f"Dropped line {record.line} ({record.title or record.arxiv_id}): {why}")
                return redirect("papers:candidates")
    else:
        form = CandidateImportForm()
    return render(request, "papers/candidate_import.html", {"form": form, "line_errors": line_errors},
                  status=400 if form.errors else 200)


def candidate_detail(request: HttpRequest, pk: int) -> HttpResponse:
    candidate = get_object_or_404(PaperCandidate.objects.select_related("paper"), pk=pk)
    form = AttachPdfForm()
    if request.method == "POST":
        require_perm(request, "edit_papers")
        form = AttachPdfForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                paper = intake.attach_pdf(candidate, form.cleaned_data["pdf"], split=form.cleaned_data["split"],
                                          user=request.user)
            except intake.PdfError as exc:
                form.add_error("pdf", str(exc))
            else:
                messages.success(request, f"{paper.title}: PDF converted to Markdown ({len(paper.markdown):,} "
                                          "characters).")
                return redirect("papers:detail", slug=paper.slug)
    return render(request, "papers/candidate_detail.html", {
        "candidate": candidate, "form": form, "can_edit": request.user.has_perm(perm("edit_papers")),
    }, status=400 if form.errors else 200)
