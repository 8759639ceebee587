"""API tokens: created and revoked by their owner (or a user manager), checked by DRF.

A key is 40 random URL-safe characters shown once; the database keeps its SHA-256 only, so a
leaked database or backup holds no usable key. ``Authorization: Token <key>`` as with DRF's
own tokens, which still work (``manage.py drf_create_token``) for scripts made before these.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.core.cache import cache
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from redis.exceptions import RedisError
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from apps.core.domain import Invalid
from apps.core.models import ApiToken
from apps.core.roles import perm

log = logging.getLogger(__name__)

# Writing last_used_at on every request would turn each API read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# How long stamping last_used_at may wait for a lock someone else holds before giving up.
LAST_USED_LOCK_WAIT_MS = 100
MAX_TOKENS_PER_USER = 20


class TokenError(Invalid, ValueError):
    """A token that cannot be made or revoked as asked; the API puts it on the name it was given."""

    field = "name"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_token(user, name: str) -> tuple[ApiToken, str]:
    """A new token for ``user``; returns it and the key, which is never available again."""
    name = name.strip()
    if not name:
        raise TokenError("Give the token a name, e.g. the script or machine that will use it.")
    with transaction.atomic():
        if ApiToken.objects.select_for_update().filter(user=user).count() >= MAX_TOKENS_PER_USER:
            raise TokenError(f"You already have {MAX_TOKENS_PER_USER} tokens: revoke one first.")
        key = secrets.token_urlsafe(30)
        token = ApiToken.objects.create(user=user, name=name[:100], prefix=key[:8], key_hash=hash_key(key))
    return token, key


def visible_tokens(user):
    """A user's own tokens; a user manager sees everyone's (to revoke a leaked one)."""
    tokens = ApiToken.objects.select_related("user")
    return tokens if user.has_perm(perm("manage_users")) else tokens.filter(user=user)


def revoke_token(user, token_id: int) -> ApiToken:
    token = visible_tokens(user).filter(pk=token_id).first()
    if token is None:
        raise TokenError("No such token (already revoked?).")
    token.delete()
    return token


@contextmanager
def _brief_lock_wait(ms: int) -> Iterator[None]:
    """A transaction whose writes wait at most ``ms`` for a lock held elsewhere (then DatabaseError).

    SQLite locks the whole database for a writer (a long import holds it for minutes) and
    PostgreSQL a row: either way a bookkeeping write must give way rather than hold up a read.
    """
    if connection.vendor != "sqlite":
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(f"SET LOCAL lock_timeout = '{int(ms)}ms'")
            yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        previous = cursor.fetchone()[0]
        cursor.execute(f"PRAGMA busy_timeout = {int(ms)}")
    try:
        with transaction.atomic():  # BEGIN IMMEDIATE: the wait for the database's write lock
            yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout = {int(previous)}")


def touch_last_used(token: ApiToken) -> None:
    """Stamp the token's last use, at most once a minute; never at the expense of the request."""
    now = timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < LAST_USED_RESOLUTION:
        return
    try:
        # One request per token and minute tries, across servers: a burst of calls, or calls
        # while the write is blocked, cost one attempt.
        if not cache.add(f"api-token-used:{token.key_hash}", 1, timeout=LAST_USED_RESOLUTION.total_seconds()):
            return
    except RedisError:
        pass  # without Redis the stamp is still written, only without the cross-server throttle
    try:
        with _brief_lock_wait(LAST_USED_LOCK_WAIT_MS):
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    except DatabaseError as exc:
        log.info("API token %s: last use not recorded (%s)", token.pk, exc)


class ApiTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``: our hashed tokens first, then DRF's plain ones."""

    def authenticate_credentials(self, key: str):
        token = ApiToken.objects.select_related("user").filter(key_hash=hash_key(key)).first()
        if token is None:
            return super().authenticate_credentials(key)
        if not token.user.is_active:
            raise AuthenticationFailed("User inactive or deleted.")
        touch_last_used(token)
        return token.user, token
