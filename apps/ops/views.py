"""/metrics: Prometheus text format, for a bearer token or an allowlisted address."""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from prometheus_client import CONTENT_TYPE_LATEST

from apps.ops.metrics import render_metrics


def _allowed_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in settings.KLONG_METRICS_ALLOW:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue  # a malformed entry allows nothing
    return False


def metrics_allowed(request: HttpRequest) -> bool:
    token = settings.KLONG_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        # Constant time, so the token cannot be guessed one character at a time.
        return hmac.compare_digest(header.removeprefix("Bearer ").strip().encode(), token.encode())
    # REMOTE_ADDR, never X-Forwarded-For: a client can write that header itself. Behind nginx,
    # nginx's own rule (deploy/nginx.conf) keeps /metrics internal; scrape the app port directly.
    return _allowed_address(request.META.get("REMOTE_ADDR", ""))


@login_not_required
def metrics(request: HttpRequest) -> HttpResponse:
    # Access first: a stranger learns nothing, not even which methods exist.
    if not metrics_allowed(request):
        return HttpResponse("Metrics need a bearer token (KLONG_METRICS_TOKEN) or an allowlisted address "
                            "(KLONG_METRICS_ALLOW).\n", status=403, content_type="text/plain")
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    return HttpResponse(render_metrics(), content_type=CONTENT_TYPE_LATEST)
