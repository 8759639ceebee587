"""Small helpers shared by the HTML views."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from apps.core.roles import perm


def require_perm(request: HttpRequest, codename: str) -> None:
    if not request.user.has_perm(perm(codename)):
        raise PermissionDenied(f"Your role does not allow this ({codename.replace('_', ' ')}).")
