"""API tokens: created and revoked by their owner (or a user manager), checked by DRF.

A key is 40 random URL-safe characters shown once; the database keeps its SHA-256 only, so a
leaked database or backup holds no usable key. ``Authorization: Token <key>`` as with DRF's
own tokens, which still work (``manage.py drf_create_token``) for scripts made before these.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from apps.core.models import ApiToken
from apps.core.roles import perm

# Writing last_used_at on every request would turn each API read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_TOKENS_PER_USER = 20


class TokenError(ValueError):
    pass


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


class ApiTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``: our hashed tokens first, then DRF's plain ones."""

    def authenticate_credentials(self, key: str):
        token = ApiToken.objects.select_related("user").filter(key_hash=hash_key(key)).first()
        if token is None:
            return super().authenticate_credentials(key)
        if not token.user.is_active:
            raise AuthenticationFailed("User inactive or deleted.")
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token
