"""A full disk answers 507 with a message, on pages and in the API, instead of a bare 500.

Whatever wrote when the disk filled up cleans up after itself (e.g. trajectories/uploads.py); this
only tells the user what happened and that nothing was saved.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

log = logging.getLogger(__name__)
DISK_FULL_MESSAGE = "The server's disk is full, so nothing was saved. Tell an administrator, then try again."


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class DiskFullMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not is_disk_full(exc):
            return None
        log.error("disk full while serving %s", request.path, exc_info=exc)
        if request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", ""):
            return JsonResponse({"detail": DISK_FULL_MESSAGE}, status=507)
        return render(request, "507.html", {"message": DISK_FULL_MESSAGE}, status=507)
