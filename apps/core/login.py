"""Login with a rate limit on failed attempts, counted in the cache (Redis).

Failures are counted per (username, client address) and per client address alone, in a fixed
window that starts at the first failure. Counting per username only would let anyone lock a
user out; per address only would let one address try every username.
"""

from __future__ import annotations

import hashlib
import math
import time

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.http import HttpRequest


def _limits() -> tuple[int, int, int]:
    return (
        int(getattr(settings, "KLONG_LOGIN_MAX_FAILURES", 5)),
        int(getattr(settings, "KLONG_LOGIN_MAX_FAILURES_PER_ADDRESS", 50)),
        int(getattr(settings, "KLONG_LOGIN_WINDOW_S", 900)),
    )


def _keys(request: HttpRequest, username: str) -> tuple[str, str]:
    address = request.META.get("REMOTE_ADDR", "")
    digest = hashlib.sha256(f"{username.strip().lower()}\0{address}".encode()).hexdigest()[:32]
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


class RateLimitedAuthenticationForm(AuthenticationForm):
    locked_message = ""

    def clean(self):
        username = self.data.get("username", "")
        wait = seconds_locked(self.request, username)
        if wait:
            minutes = max(1, math.ceil(wait / 60))
            self.locked_message = (
                f"Too many failed logins. Try again in {minutes} minute{'s' if minutes > 1 else ''}."
            )
            raise forms.ValidationError(self.locked_message, code="rate_limited")
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            record_failure(self.request, username)
            raise
        clear_failures(self.request, username)
        return cleaned


class RateLimitedLoginView(LoginView):
    form_class = RateLimitedAuthenticationForm
    redirect_authenticated_user = True

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.locked_message:
            response.status_code = 429
        return response
