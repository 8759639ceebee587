"""Faults and bad input answered with a message, on pages and in the API, instead of a 500 or 503.

A domain error (``apps.core.domain``) that a page's view lets through answers its kind's status:
the error page with its message, or its JSON body to a client that asked for JSON.

A full disk answers 507: whatever wrote when the disk filled up cleans up after itself (e.g.
trajectories/uploads.py); this only tells the user what happened and that nothing was saved.
A NUL character in a query parameter, form field or JSON body answers 400: PostgreSQL refuses NUL
in text and in JSON, so the query would fail as a database error (it answered 503).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.datastructures import MultiValueDict

from apps.core.domain import DomainError

log = logging.getLogger(__name__)
DISK_FULL_MESSAGE = "The server's disk is full, so nothing was saved. Tell an administrator, then try again."


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


def field_with_nul(value: Any) -> str | None:
    """The name of the first field (``a.b.0`` when nested) whose name or text holds a NUL, or None.

    Walks query dicts (every value of a repeated parameter), dicts and lists with a stack of its
    own, so a deeply nested JSON body cannot exhaust the recursion limit.
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        name, item = stack.pop()
        if "\0" in name or (isinstance(item, str) and "\0" in item):
            return name.replace("\0", "\\0")
        if isinstance(item, MultiValueDict):
            stack.extend((f"{name}.{key}" if name else key, value) for key, values in item.lists() for value in values)
            continue
        if isinstance(item, dict):
            children = item.items()
        elif isinstance(item, list):
            children = enumerate(item)
        else:
            continue
        stack.extend((f"{name}.{key}" if name else str(key), child) for key, child in children)
    return None


def nul_message(field: str) -> str:
    where = f"The field '{field}'" if field else "The request body"
    return f"{where} contains a NUL character (\\0), which is not allowed: remove it and try again."


class DiskFullMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not is_disk_full(exc):
            return None
        log.error("disk full while serving %s", request.path, exc_info=exc)
        if wants_json(request):
            return JsonResponse({"detail": DISK_FULL_MESSAGE}, status=507)
        return render(request, "507.html", {"message": DISK_FULL_MESSAGE}, status=507)


class DomainErrorMiddleware:
    """The pages' half of the one mapping (the API's is ``apps.core.api.exception_handler``)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not isinstance(exc, DomainError):
            return None
        if wants_json(request):
            response: HttpResponse = JsonResponse(exc.body(), status=exc.status_code)
        else:
            response = render(request, "error.html", {"title": exc.title, "message": exc.message},
                              status=exc.status_code)
        for name, value in exc.headers.items():
            response[name] = value
        return response


class RejectNulMiddleware:
    """400 for a NUL in a query parameter, a path part or a page's form field, before the view runs.

    Every list filter and search reads the query string, some straight into a query. Page forms
    were parsed already by the CSRF check; API bodies are parsed later by DRF, whose parsers
    (``apps.core.api``) refuse NUL themselves, so an API upload is never parsed here.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs) -> HttpResponse | None:
        # A path part too: API detail routes take any character but "/" and "." as the lookup.
        field = field_with_nul(view_kwargs) or field_with_nul(request.GET)
        if field is None and request.method == "POST" and not is_api_view(view_func):
            field = field_with_nul(request.POST)
        if field is None:
            return None
        message = nul_message(field)
        if wants_json(request):
            return JsonResponse({"detail": message}, status=400)
        return render(request, "400.html", {"message": message}, status=400)


def is_api_view(view_func) -> bool:
    """A DRF view: it authenticates and parses its own requests, and answers in JSON."""
    return getattr(view_func, "cls", None) is not None and hasattr(view_func.cls, "permission_classes")
