"""Response security headers: a Content-Security-Policy with a per-request script nonce.

Django 5.2 has no CSP support of its own (it arrives in 6.0), so this small middleware sets one.
Scripts: only our own static files and inline blocks that carry ``nonce="{{ request.csp_nonce }}"``
(``json_script`` blocks are data, never executed, and need no nonce). Styles keep
``'unsafe-inline'``: plotly.js and htmx insert ``<style>`` elements at run time and plotly has no
nonce hook; style injection cannot run script, so this is the one exception.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

POLICY = (
    "default-src 'self'; "
    "script-src 'self' 'nonce-{nonce}'; "
    "style-src 'self' 'unsafe-inline'; "
    # data:/blob: for plotly's "download as PNG" and inline SVG icons.
    "img-src 'self' data: blob:; "
    "font-src 'self' data:; "
    # 'self' covers ws:/wss: to the same host (CSP level 3) for the live job pages.
    "connect-src 'self'; "
    "object-src 'none'; "
    "base-uri 'self'; "
    "form-action 'self'; "
    "frame-ancestors 'none'"
)


def content_security_policy(nonce: str) -> str:
    return POLICY.format(nonce=nonce)


class ContentSecurityPolicyMiddleware:
    """Give every request a fresh nonce and every response the policy built from it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.csp_nonce = secrets.token_urlsafe(18)
        response = self.get_response(request)
        # A view that needs another policy (none does today) sets its own header first.
        response.headers.setdefault("Content-Security-Policy", content_security_policy(request.csp_nonce))
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        return response
