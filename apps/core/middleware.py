from __future__ import annotations

from django.contrib.auth.middleware import LoginRequiredMiddleware as DjangoLoginRequired
from django.contrib.auth.views import LogoutView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.core.errors import is_api_view
from apps.core.roles import perm


class LoginRequiredMiddleware(DjangoLoginRequired):
    """Every page needs a logged-in user who holds a role.

    API views are left to DRF, which also accepts tokens and answers 401/403 instead of
    redirecting; every DRF view goes through ``RolePermission`` by default.
    """

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs) -> HttpResponse | None:
        if is_api_view(view_func):
            return None
        response = super().process_view(request, view_func, view_args, view_kwargs)
        if response is not None or not getattr(view_func, "login_required", True):
            return response
        # A user whose role was taken away must still be able to log out.
        if getattr(view_func, "view_class", None) is LogoutView:
            return None
        if not request.user.has_perm(perm("view_studio")):
            return render(request, "403_no_role.html", status=403)
        return None
