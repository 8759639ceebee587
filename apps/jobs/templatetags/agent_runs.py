"""The agent_run job page's card: the trajectory it records (live while it runs)."""

from __future__ import annotations

from typing import Any

from django import template

from apps.trajectories.models import Trajectory

register = template.Library()


@register.inclusion_tag("jobs/_agent_run.html")
def agent_run_card(job: Any) -> dict[str, Any]:
    trajectories = Trajectory.objects.filter(meta__job=job.pk).order_by("-pk").only(
        "pk", "title", "live", "turn_count", "end_state", "review", "meta", "submission_url"
    )
    return {"job": job, "trajectories": list(trajectories)}
