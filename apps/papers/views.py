from __future__ import annotations

from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.papers.models import Paper


def paper_list(request: HttpRequest) -> HttpResponse:
    papers = Paper.objects.annotate(
        n_versions=Count("rubric_versions", distinct=True), n_trajectories=Count("trajectories", distinct=True)
    )
    q = request.GET.get("q", "").strip()
    if q:
        papers = papers.filter(Q(title__icontains=q) | Q(slug__icontains=q) | Q(arxiv_id__icontains=q))
    split = request.GET.get("split", "")
    if split in Paper.Split.values:
        papers = papers.filter(split=split)
    page = Paginator(papers, 25).get_page(request.GET.get("page"))
    return render(request, "papers/list.html", {"page": page, "q": q, "split": split, "splits": Paper.Split.choices})
