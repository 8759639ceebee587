"""WebSockets that live no longer than the login that opened them.

A socket is opened by a session and checked once, at ``connect``; without more it would go on
streaming after its user logged out, after the session expired, or after their role was taken
away. ``SessionBoundConsumer`` (the base of every consumer) closes it:

- on logout at once: each socket joins its session's group, and ``user_logged_out`` sends the
  group a close (code 4401);
- when a role or permission is taken away, or a user is changed (deactivated, a new password) or
  deleted: every socket re-checks its session and user from the database (4401 if the session is
  gone, 4403 if the role is);
- on expiry, or anything that reached no socket (Redis down, a password changed elsewhere): each
  socket re-checks every ``KLONG_SOCKET_SESSION_CHECK_S`` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from importlib import import_module
from types import SimpleNamespace

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user, get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_out
from django.db import DatabaseError, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from apps.core.roles import perm

log = logging.getLogger(__name__)

# Every socket is in this group: a change of anyone's access asks them all to re-check.
SOCKETS_GROUP = "studio-sockets"
SESSION_ENDED, ACCESS_LOST = 4401, 4403


def session_group(session_key: str) -> str:
    # Hashed: the channel layer's group names are visible to anyone who can read Redis.
    return "session-" + hashlib.sha256(session_key.encode()).hexdigest()[:32]


def may_watch(user) -> bool:
    """What every socket needs: a logged-in user holding a role."""
    return user is not None and user.is_authenticated and user.has_perm(perm("view_studio"))


class SessionBoundConsumer(AsyncJsonWebsocketConsumer):
    """A consumer whose socket closes when its session ends or its user loses the right to watch.

    A subclass checks the user in ``connect`` as usual, then calls ``accept_for_session()``
    instead of ``accept()``.
    """

    session_key: str | None = None
    closed = False
    _watch: asyncio.Task | None = None

    async def close(self, code=None, reason=None) -> None:
        self.closed = True
        await super().close(code=code, reason=reason)

    async def send(self, text_data=None, bytes_data=None, close=False) -> None:
        # Events already queued for a socket being closed are not sent after the close.
        if not self.closed:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)

    async def accept_for_session(self) -> None:
        self.session_key = self.scope["session"].session_key
        await self.channel_layer.group_add(session_group(self.session_key), self.channel_name)
        await self.channel_layer.group_add(SOCKETS_GROUP, self.channel_name)
        await self.accept()
        self._watch = asyncio.create_task(self._recheck_periodically())

    async def disconnect(self, code: int) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self.session_key is not None:
            await self.channel_layer.group_discard(session_group(self.session_key), self.channel_name)
            await self.channel_layer.group_discard(SOCKETS_GROUP, self.channel_name)

    async def session_ended(self, message: dict) -> None:
        await self.close(code=SESSION_ENDED)

    async def access_changed(self, message: dict) -> None:
        await self._close_unless_allowed()

    async def _recheck_periodically(self) -> None:
        while True:
            await asyncio.sleep(float(settings.KLONG_SOCKET_SESSION_CHECK_S))
            if await self._close_unless_allowed():
                return

    async def _close_unless_allowed(self) -> bool:
        """Close the socket if its session or its user's role is gone; True when it closed."""
        try:
            code = await self._refusal()
        except DatabaseError:  # the database is down: nothing to stream either; ask again later
            log.warning("socket %s: could not re-check its session", self.channel_name, exc_info=True)
            return False
        if code:
            await self.close(code=code)
        return bool(code)

    @database_sync_to_async
    def _refusal(self) -> int:
        # A fresh read of the session: expired, flushed or cycled, it no longer yields the user.
        store = import_module(settings.SESSION_ENGINE).SessionStore(self.session_key)
        user = get_user(SimpleNamespace(session=store))
        if not user.is_authenticated or user.pk != self.scope["user"].pk:
            return SESSION_ENDED
        return 0 if may_watch(user) else ACCESS_LOST


def _send(group: str, kind: str) -> None:
    """Tell a group's sockets; a failure only delays the close until their next periodic check."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": kind})
    except Exception as exc:  # Redis down must not fail a logout or an admin's save
        log.warning("could not tell the sockets in %s of %s (%s): they re-check on their own", group, kind, exc)


@receiver(user_logged_out, dispatch_uid="klong-sockets-logout")
def _close_the_sessions_sockets(sender, request, user, **kwargs) -> None:
    if request is not None and request.session.session_key:
        _send(session_group(request.session.session_key), "session.ended")


def _tell_sockets_access_changed() -> None:
    # After the commit, so the sockets' re-check reads the new roles.
    transaction.on_commit(lambda: _send(SOCKETS_GROUP, "access.changed"))


def _roles_changed(sender, action: str, **kwargs) -> None:
    # Only a removal can take access away (adding roles at migrate or createadmin tells no one).
    if action in ("post_remove", "post_clear"):
        _tell_sockets_access_changed()


def _user_changed(sender, instance, created: bool = False, update_fields=None, **kwargs) -> None:
    # A new user has no socket yet, and every login saves last_login: neither changes access.
    if not created and not (update_fields and set(update_fields) <= {"last_login"}):
        _tell_sockets_access_changed()


def connect_access_signals() -> None:
    """Roles (groups) and permissions taken away, users changed or deleted: who may watch changes."""
    user_model = get_user_model()
    for through in (user_model.groups.through, user_model.user_permissions.through, Group.permissions.through):
        m2m_changed.connect(_roles_changed, sender=through, dispatch_uid=f"klong-sockets-{through.__name__}")
    post_save.connect(_user_changed, sender=user_model, dispatch_uid="klong-sockets-user-saved")
    post_delete.connect(_user_changed, sender=user_model, dispatch_uid="klong-sockets-user-deleted")
