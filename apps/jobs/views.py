from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from apps.core.pages import require_perm
from apps.jobs.models import Job
from apps.jobs.services import cancel_job, launch_job
from worker.engines import KINDS

STATE_FILTERS = [s for s, _ in Job.State.choices]


def job_list(request: HttpRequest) -> HttpResponse:
    jobs = Job.objects.select_related("created_by")
    state = request.GET.get("state", "")
    if state in STATE_FILTERS:
        jobs = jobs.filter(state=state)
    kind = request.GET.get("kind", "")
    if kind:
        jobs = jobs.filter(kind=kind)
    page = Paginator(jobs, 25).get_page(request.GET.get("page"))
    return render(
        request,
        "jobs/list.html",
        {"page": page, "state": state, "kind": kind, "states": Job.State.choices, "kinds": KINDS.values()},
    )


def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(Job.objects.select_related("created_by"), pk=pk)
    series: dict[str, dict[str, list]] = {}
    for step, name, value in job.metrics.values_list("step", "name", "value"):
        s = series.setdefault(name, {"x": [], "y": []})
        s["x"].append(step)
        s["y"].append(value)
    return render(
        request,
        "jobs/detail.html",
        {"job": job, "metrics": series, "logs": job.logs.order_by("-id")[:200][::-1]},
    )


@require_POST
def job_launch_selftest(request: HttpRequest) -> HttpResponse:
    require_perm(request, "launch_jobs")
    job = launch_job("selftest", {"steps": 20, "delay_s": 0.1}, request.user)
    messages.success(request, f"Self-test job #{job.pk} queued.")
    return redirect("jobs:detail", pk=job.pk)


@require_POST
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    require_perm(request, "cancel_jobs")
    job = get_object_or_404(Job, pk=pk)
    try:
        cancel_job(job)
        messages.info(request, f"Cancellation of job #{job.pk} requested.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("jobs:detail", pk=job.pk)
