from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.trajectories.models import Trajectory


def trajectory_list(request: HttpRequest) -> HttpResponse:
    trajectories = Trajectory.objects.select_related("paper")
    end_state = request.GET.get("end_state", "")
    if end_state in Trajectory.EndState.values:
        trajectories = trajectories.filter(end_state=end_state)
    page = Paginator(trajectories, 25).get_page(request.GET.get("page"))
    return render(
        request,
        "trajectories/list.html",
        {"page": page, "end_state": end_state, "end_states": Trajectory.EndState.choices},
    )
