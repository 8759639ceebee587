"""A fix for kombu's Redis transport, so that a worker survives its Redis restarting.

Seen with kombu 5.7.0, the newest release at the time: when the connection drops while the
worker waits on BRPOP, ``Channel.close()`` first reads that BRPOP's reply, which raises
ConnectionError with the server gone. The error is swallowed by the caller, but the channel stays
half open while its connection's transport is closed. Celery then closes the connection once more;
this second close tries to restore the unacknowledged messages through a transport that has no
client any more and raises ``AttributeError: 'NoneType' object has no attribute 'hostname'``,
which Celery treats as unrecoverable: the worker's main process exits. Here the pending reply is
given up first, so the first close completes. tests/hardening/test_faults.py kills Redis under a
worker waiting on BRPOP: it shows when a kombu release makes this module unnecessary.
"""

from __future__ import annotations

from queue import Empty

from kombu.transport import redis as kombu_redis

_close = kombu_redis.Channel.close


def _close_without_the_lost_reply(self: kombu_redis.Channel) -> None:
    if self._in_poll:
        try:
            self._brpop_read()
        except (Empty, *self.connection_errors):
            pass  # the reply went with the connection; _brpop_read has cleared _in_poll
    _close(self)


kombu_redis.Channel.close = _close_without_the_lost_reply
