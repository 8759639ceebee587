"""Test data built in code: users per role, papers, jobs."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from apps.core.roles import ROLES, ensure_roles

PASSWORD = "correct-horse-battery"
PERSONAS = (*ROLES, "outsider")


def make_user(role: str | None, username: str | None = None):
    """A user holding ``role`` (a group name), or no role at all when ``role`` is None/'outsider'."""
    ensure_roles()
    name = username or (role or "outsider")
    user = get_user_model().objects.create_user(username=name, password=PASSWORD)
    if role and role != "outsider":
        user.groups.add(Group.objects.get(name=role))
    return user


def make_personas() -> dict:
    return {role: make_user(role) for role in PERSONAS}
