from __future__ import annotations

import logging

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError
from django.db.models import ProtectedError, RestrictedError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from apps.core.domain import Conflict, DomainError
from apps.core.errors import DISK_FULL_MESSAGE, is_disk_full

log = logging.getLogger(__name__)


def exception_handler(exc, context):
    """DRF's handler, plus the domain errors' statuses, and clear JSON for model validation and
    unreachable services."""
    if isinstance(exc, DomainError):
        return domain_error_response(exc, context.get("view"))
    response = drf_exception_handler(exc, context)
    if response is not None:
        return response
    if isinstance(exc, ProtectedError | RestrictedError):
        # Deleting something that other records still use is a conflict, not an outage.
        objects = getattr(exc, "protected_objects", None) or getattr(exc, "restricted_objects", ())
        users = sorted({str(obj._meta.verbose_name_plural) for obj in objects})
        return Response({"detail": f"It is still used by {', '.join(users)}: delete or move those first."},
                        status=status.HTTP_409_CONFLICT)
    if is_disk_full(exc):
        log.error("disk full in %s", context.get("view"), exc_info=exc)
        return Response({"detail": DISK_FULL_MESSAGE}, status=status.HTTP_507_INSUFFICIENT_STORAGE)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        return Response(detail, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DatabaseError):
        log.exception("database error in %s", context.get("view"))
        return Response({"detail": "The database is unavailable; try again shortly."}, status=503)
    return None


def domain_error_response(exc: DomainError, view) -> Response:
    """The API's half of the one mapping (the pages' is ``apps.core.errors.DomainErrorMiddleware``)."""
    body = exc.body()
    if isinstance(exc, Conflict) and exc.current is not None and not exc.field:
        body["current"] = render_current(view, exc.current)
    return Response(body, status=exc.status_code, headers=exc.headers)


def render_current(view, obj) -> object:
    """A conflicting object as the view shows it: its ``render_current``, else its serializer
    (None from a view that has neither)."""
    render = getattr(view, "render_current", None)
    if render is not None:
        return render(obj)
    if hasattr(view, "get_serializer"):
        return view.get_serializer(obj).data
    return None
