"""One rate limit on failed logins for every login path, counted in the cache (Redis).

Failures are counted per (username, client address) and per client address alone, in a fixed
window that starts at the first failure. Counting per username only would let anyone lock a
user out; per address only would let one address try every username.

Every password check in Django goes through ``authenticate()``, so the limit lives there rather
than in a form: ``LoginLimit`` is the first authentication backend and refuses to let any later
backend check a password while the username or address is locked, ``user_login_failed`` counts
each failure and ``user_logged_in`` clears the username's count. ``/login/``, ``/admin/login/``
and any login path added later share it.
"""

from __future__ import annotations

import hashlib
import math
import time
import unicodedata
from collections.abc import Callable

from asgiref.sync import sync_to_async
from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

# Set on the request by LoginLimit when it refused a login: forms say why, the response is a 429.
LOCKED_ATTRIBUTE = "login_locked_for_s"


def _limits() -> tuple[int, int, int]:
    return (
        int(getattr(settings, "KLONG_LOGIN_MAX_FAILURES", 5)),
        int(getattr(settings, "KLONG_LOGIN_MAX_FAILURES_PER_ADDRESS", 50)),
        int(getattr(settings, "KLONG_LOGIN_WINDOW_S", 900)),
    )


def login_name(username: str) -> str:
    """The form of a username that failures are counted under.

    NFKC, as Django's login form applies before looking the user up (so "ａｄｍｉｎ" logs in as
    "admin" and must share its count), then case-folded (a second NFKC: folding can denormalise).
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).casefold()).strip()


def _keys(request: HttpRequest, username: str) -> tuple[str, str]:
    address = request.META.get("REMOTE_ADDR", "")
    digest = hashlib.sha256(f"{login_name(username)}\0{address}".encode()).hexdigest()[:32]
    return f"login-fail:user:{digest}", f"login-fail:addr:{address}"


def _count(key: str) -> tuple[int, float]:
    """Failures counted under ``key`` and when the window started."""
    failures = cache.get(key)
    started = cache.get(f"{key}:start")
    return (int(failures), float(started)) if failures and started else (0, 0.0)


def seconds_locked(request: HttpRequest, username: str) -> int:
    """How long this username and address must wait before trying again (0: not locked)."""
    per_user, per_address, window = _limits()
    now = time.time()
    waits = [0.0]
    for key, limit in zip(_keys(request, username), (per_user, per_address), strict=True):
        failures, started = _count(key)
        if failures >= limit:
            waits.append(started + window - now)
    return max(0, math.ceil(max(waits)))


def record_failure(request: HttpRequest, username: str) -> None:
    _, _, window = _limits()
    now = time.time()
    for key in _keys(request, username):
        # add() sets only a missing key and incr() is one INCRBY in Redis, so failures sent in
        # parallel all count (a read-then-write would let a burst of guesses count once).
        cache.add(f"{key}:start", now, timeout=window)
        cache.add(key, 0, timeout=window)
        try:
            cache.incr(key)
        except ValueError:  # the window ended between add() and incr(): this failure opens a new one
            cache.set(f"{key}:start", now, timeout=window)
            cache.set(key, 1, timeout=window)


def clear_failures(request: HttpRequest, username: str) -> None:
    key = _keys(request, username)[0]
    cache.delete_many([key, f"{key}:start"])


class LoginLimit:
    """First in AUTHENTICATION_BACKENDS: stops every password check while the login is locked.

    It never authenticates anyone and has no ``get_user``/``has_perm``, so sessions, permissions
    and ``Client.force_login`` go on using ModelBackend as before.
    """

    def authenticate(self, request: HttpRequest | None, username: str | None = None, **credentials) -> None:
        if request is None:  # not a login over HTTP (a management command, a shell)
            return None
        wait = seconds_locked(request, username or "")
        if wait:
            setattr(request, LOCKED_ATTRIBUTE, wait)
            raise PermissionDenied("too many failed logins")
        return None

    async def aauthenticate(self, request: HttpRequest | None, username: str | None = None, **credentials) -> None:
        return await sync_to_async(self.authenticate)(request, username, **credentials)


@receiver(user_login_failed, dispatch_uid="klong-login-limit-failure")
def _count_failure(sender, credentials: dict, request: HttpRequest | None = None, **kwargs) -> None:
    # A refusal while locked is not a new guess: the password was never checked.
    if request is not None and not getattr(request, LOCKED_ATTRIBUTE, 0):
        record_failure(request, str(credentials.get("username") or ""))


@receiver(user_logged_in, dispatch_uid="klong-login-limit-success")
def _clear_on_login(sender, request: HttpRequest | None, user, **kwargs) -> None:
    if request is not None:
        clear_failures(request, user.get_username())


def locked_message(request: HttpRequest) -> str:
    minutes = max(1, math.ceil(getattr(request, LOCKED_ATTRIBUTE, 0) / 60))
    return f"Too many failed logins. Try again in {minutes} minute{'s' if minutes > 1 else ''}."


class LoginLimitFormMixin:
    """A login form that says the login is locked instead of "wrong password"."""

    request: HttpRequest | None

    @property
    def locked_message(self) -> str:
        locked = self.request is not None and getattr(self.request, LOCKED_ATTRIBUTE, 0)
        return locked_message(self.request) if locked else ""

    def get_invalid_login_error(self) -> forms.ValidationError:
        if self.locked_message:
            return forms.ValidationError(self.locked_message, code="rate_limited")
        return super().get_invalid_login_error()


class RateLimitedAuthenticationForm(LoginLimitFormMixin, AuthenticationForm):
    pass


class RateLimitedAdminAuthenticationForm(LoginLimitFormMixin, AdminAuthenticationForm):
    pass


class RateLimitedLoginView(LoginView):
    form_class = RateLimitedAuthenticationForm
    redirect_authenticated_user = True


class LoginLimitMiddleware:
    """A login page refused by the limit answers 429 with Retry-After, whichever view served it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        wait = getattr(request, LOCKED_ATTRIBUTE, 0)
        if wait and response.status_code == 200:
            response.status_code = 429
            response["Retry-After"] = str(wait)
        return response
