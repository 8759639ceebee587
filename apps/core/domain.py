"""The one error vocabulary: what the domain refuses, and the HTTP status each refusal answers.

Services (and the pure modules under them) raise a ``DomainError`` of the right kind with a message
for the user; they never build responses. Two places turn one into an answer, both through
``status_code``, ``body()`` and ``headers``: the DRF exception handler (``apps.core.api``) for the API,
and ``apps.core.errors.DomainErrorMiddleware`` for the pages. A view catches a domain error only to
do more than answer it (put it on a form, flash it and redirect).

An app's error keeps its own name and derives from a kind (``class StaleNode(Conflict)``); the first
kind among its bases decides (``BundleTooLarge(TooLarge, BundleError)`` is a 413 though a BundleError
is Invalid). One that code catches as ``ValueError`` or Django's ``ValidationError`` keeps that base. No
Django import here: the pure modules (rubric codec, splitting, the model client) use it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class DomainError(Exception):
    """A request the domain refuses. ``message`` is for the user (it names the problem or the limit).

    The JSON body is ``{"detail": message, **details}``, or, when ``field`` is set, a field error in
    DRF's shape: ``{field: [message]}``. ``headers`` go on the answer (``Retry-After``, ``ETag``).
    """

    status_code: ClassVar[int] = 400
    title: ClassVar[str] = "The request could not be used"
    field: str | None = None

    def __init__(self, message: str, *, details: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.headers: dict[str, str] = dict(headers or {})
        if field is not None:
            self.field = field

    def body(self) -> dict[str, Any]:
        if self.field:
            return {self.field: [self.message]}
        return {"detail": self.message, **self.details}


class Invalid(DomainError):
    """Input that cannot be used as given (bad value, malformed file, refused tree): 400."""


class Forbidden(DomainError):
    """Not allowed for this user, whatever the input: 403."""

    status_code = 403
    title = "Not allowed"


class NotFound(DomainError):
    """What the request names does not exist (any more): 404."""

    status_code = 404
    title = "Not found"


class Conflict(DomainError):
    """The thing changed or is in a state that refuses this: 409.

    ``current`` is the object as it is now, so the client can merge or overwrite; the API renders it
    under ``"current"`` (with the view's ``render_current`` or its serializer).
    """

    status_code = 409
    title = "Changed meanwhile"

    def __init__(self, message: str, current: Any = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.current = current


class TooLarge(DomainError):
    """Bigger than a configured limit (upload, archive, expansion): 413."""

    status_code = 413
    title = "Too large"


class TooMany(DomainError):
    """Over a rate or a count per user; ``retry_after`` (seconds) when waiting helps: 429."""

    status_code = 429
    title = "Too many at once"

    def __init__(self, message: str, retry_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        if retry_after is not None:
            self.headers.setdefault("Retry-After", str(retry_after))


class Unavailable(DomainError):
    """A service the request needs is down or failing (a model endpoint): 503."""

    status_code = 503
    title = "Unavailable"


# Every kind, for the docs and the tests: an app's error derives from one of these.
KINDS: tuple[type[DomainError], ...] = (Invalid, Forbidden, NotFound, Conflict, TooLarge, TooMany, Unavailable)
