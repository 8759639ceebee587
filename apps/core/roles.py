"""Roles as Django groups, and the studio-wide permissions each one grants.

Every feature checks one of these permissions (never a group name), so a site can re-shape a
role in the admin without touching code.
"""

from __future__ import annotations

from typing import Final

from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType

# codename -> description; they live on the unmanaged ``core.Studio`` model.
PERMISSIONS: Final[dict[str, str]] = {
    "view_studio": "Read papers, rubrics, trajectories, judge runs and jobs",
    "edit_papers": "Create, import and edit papers",
    "edit_rubrics": "Edit rubric trees and save versions",
    "grade": "Grade leaves and write annotations",
    "launch_jobs": "Launch training, distillation and judging jobs",
    "cancel_jobs": "Cancel running jobs",
    "manage_users": "Manage users, roles and API tokens",
}

ADMIN, CURATOR, OPERATOR, VIEWER = "admin", "curator", "operator", "viewer"
ROLES: Final[dict[str, tuple[str, ...]]] = {
    ADMIN: tuple(PERMISSIONS),
    CURATOR: ("view_studio", "edit_papers", "edit_rubrics", "grade"),
    OPERATOR: ("view_studio", "launch_jobs", "cancel_jobs"),
    VIEWER: ("view_studio",),
}


def perm(codename: str) -> str:
    """The full permission name Django's ``has_perm`` expects."""
    if codename not in PERMISSIONS:
        raise KeyError(f"unknown studio permission {codename!r}")
    return f"core.{codename}"


def ensure_roles(**_: object) -> None:
    """Create the role groups and give each its permissions (idempotent; runs after migrate)."""
    # Through the app registry: core.models imports this module for PERMISSIONS.
    studio = apps.get_model("core", "Studio")
    content_type = ContentType.objects.get_for_model(studio, for_concrete_model=False)
    by_codename = {}
    for codename, name in PERMISSIONS.items():
        permission, _created = Permission.objects.get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )
        by_codename[codename] = permission
    for role, codenames in ROLES.items():
        group, _created = Group.objects.get_or_create(name=role)
        group.permissions.set([by_codename[c] for c in codenames])


def user_roles(user) -> list[str]:
    if not user.is_authenticated:
        return []
    if user.is_superuser:
        return [ADMIN]
    return sorted(g.name for g in user.groups.all() if g.name in ROLES)
