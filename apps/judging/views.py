from __future__ import annotations

from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.judging.models import JudgeRun


def judge_run_list(request: HttpRequest) -> HttpResponse:
    runs = JudgeRun.objects.select_related("paper", "trajectory", "rubric_version").annotate(n_grades=Count("grades"))
    page = Paginator(runs, 25).get_page(request.GET.get("page"))
    return render(request, "judging/list.html", {"page": page})
