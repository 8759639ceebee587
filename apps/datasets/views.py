from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from apps.core.pages import require_perm
from apps.core.roles import perm
from apps.datasets.forms import DatasetForm
from apps.datasets.models import Dataset
from apps.datasets.sampling import histogram
from apps.datasets.services import DatasetError, create_dataset


def dataset_list(request: HttpRequest) -> HttpResponse:
    rows = (Dataset.objects.select_related("origin_job", "created_by").annotate(n=Count("trajectories"))
            .order_by("-created_at", "-pk"))
    form = DatasetForm(request.POST or None)
    if request.method == "POST":
        require_perm(request, "launch_jobs")
        if form.is_valid():
            try:
                dataset = create_dataset(form.cleaned_data["name"], form.cleaned_data["trajectories"],
                                         user=request.user, notes=form.cleaned_data["notes"])
            except DatasetError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Dataset {dataset.name} created.")
                return redirect("datasets:detail", pk=dataset.pk)
    return render(request, "datasets/list.html", {
        "page": Paginator(rows, 25).get_page(request.GET.get("page")), "form": form,
        "can_create": request.user.has_perm(perm("launch_jobs")),
    }, status=400 if form.errors else 200)


def dataset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = get_object_or_404(Dataset.objects.select_related("origin_job", "created_by"), pk=pk)
    trajectories = dataset.trajectories.select_related("paper").order_by("paper__slug", "pk")
    scores = [t.final_score for t in trajectories if t.final_score is not None]
    return render(request, "datasets/detail.html", {
        "dataset": dataset, "trajectories": trajectories, "histogram": histogram(scores),
        "can_train": request.user.has_perm(perm("launch_jobs")),
    })
