from __future__ import annotations

from django.http import HttpRequest

from apps.core.roles import user_roles

NAVIGATION = (
    ("Papers", "papers:list"),
    ("Rubrics", "rubrics:list"),
    ("Trajectories", "trajectories:list"),
    ("Judging", "judging:list"),
    ("Datasets", "datasets:list"),
    ("Audit", "audit:home"),
    ("Jobs", "jobs:list"),
)


def navigation(request: HttpRequest) -> dict:
    match = getattr(request, "resolver_match", None)
    namespace = match.namespace if match else ""
    return {
        "nav_items": [(label, name, name.split(":")[0] == namespace) for label, name in NAVIGATION],
        "user_roles": user_roles(request.user) if hasattr(request, "user") else [],
    }
