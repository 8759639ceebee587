from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.rubrics.models import RubricVersion


def rubric_list(request: HttpRequest) -> HttpResponse:
    versions = RubricVersion.objects.select_related("paper", "created_by").order_by("paper__title", "-number")
    page = Paginator(versions, 25).get_page(request.GET.get("page"))
    return render(request, "rubrics/list.html", {"page": page})
