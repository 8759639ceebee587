from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from apps.core.roles import perm


class RolePermission(BasePermission):
    """Reads need ``view_studio``; writes need the view's ``write_permission``: a studio codename, or a dict
from viewset action to codename.

    A view that writes but names no write permission is refused for everyone, so a new endpoint
    can never be writable by accident.
    """

    message = "Your role does not allow this."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if request.method in SAFE_METHODS:
            return user.has_perm(perm("view_studio"))
        codename = getattr(view, "write_permission", None)
        if isinstance(codename, dict):
            codename = codename.get(getattr(view, "action", None))
        return bool(codename) and user.has_perm(perm(codename))
