from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core import health
from apps.core.first_steps import first_steps
from apps.jobs.models import Job
from apps.judging.models import JudgeRun
from apps.papers.models import Paper
from apps.rubrics.models import RubricVersion
from apps.trajectories.models import Trajectory, Turn

COUNT_PAGES = {"Papers": "papers:list", "Rubric versions": "rubrics:list", "Trajectories": "trajectories:list",
               "Turns": "trajectories:list", "Judge runs": "judging:list", "Jobs": "jobs:list"}


def home(request: HttpRequest) -> HttpResponse:
    counts = {
        "Papers": Paper.objects.count(),
        "Rubric versions": RubricVersion.objects.count(),
        "Trajectories": Trajectory.objects.count(),
        "Turns": Turn.objects.count(),
        "Judge runs": JudgeRun.objects.count(),
        "Jobs": Job.objects.count(),
    }
    context = {
        "counts": counts,
        # Each count card opens its page.
        "count_cards": [(label, n, COUNT_PAGES[label]) for label, n in counts.items()],
        "first_steps": first_steps(),
        "recent_jobs": Job.objects.select_related("created_by")[:8],
        "running_jobs": Job.objects.filter(state__in=[Job.State.RUNNING, Job.State.CANCELLING]).count(),
        "checks": health.check_all(worker=health.check_worker_heartbeats),
    }
    return render(request, "core/home.html", context)


@extend_schema(responses={200: OpenApiTypes.OBJECT, 503: OpenApiTypes.OBJECT})
@api_view(["GET"])
def healthz(request: Request) -> Response:
    """Database, Redis and worker reachability as JSON (a session or an API token is needed)."""
    checks = health.check_all()
    ok = all(c.ok for c in checks)
    return Response(
        {"status": "ok" if ok else "degraded", "checks": {c.name: c.as_dict() for c in checks}},
        status=200 if ok else 503,
    )


@login_not_required
def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "404.html", {"path": request.path}, status=404)


@login_not_required
def server_error(request: HttpRequest) -> HttpResponse:
    return render(request, "500.html", status=500)
