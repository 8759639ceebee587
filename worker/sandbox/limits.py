"""How many sandboxes may run at once on one Docker host: a counting semaphore in Redis.

Every worker pointing at the same DOCKER_HOST shares one sorted set of leases (member = lease
token, score = when it lapses). Acquiring drops lapsed leases and adds one if fewer than the
limit remain, atomically in one Lua script; a worker that dies without releasing frees its slot
when the lease lapses (the sandbox's wall clock plus a margin: by then its container is gone).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings

from worker.sandbox.spec import SandboxBusy

_ACQUIRE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[3]), ARGV[4])
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) - now) + 60)
  return 1
end
return 0
"""


@dataclass
class Lease:
    slots: HostSlots
    key: str
    token: str

    def release(self) -> None:
        self.slots.redis.zrem(self.key, self.token)


class HostSlots:
    def __init__(self, redis: Any, limit: int, prefix: str = "klong:sandbox-slots") -> None:
        if limit < 1:
            raise ValueError("the sandbox limit per host must be at least 1")
        self.redis = redis
        self.limit = limit
        self.prefix = prefix
        self._acquire = redis.register_script(_ACQUIRE)

    def key(self, host: str) -> str:
        return f"{self.prefix}:{host}"

    def in_use(self, host: str) -> int:
        key = self.key(host)
        self.redis.zremrangebyscore(key, "-inf", time.time())
        return int(self.redis.zcard(key))

    def try_acquire(self, host: str, hold_s: float) -> Lease | None:
        token = uuid.uuid4().hex
        now = time.time()
        if self._acquire(keys=[self.key(host)], args=[now, self.limit, now + hold_s, token]):
            return Lease(self, self.key(host), token)
        return None

    def acquire(self, host: str, *, hold_s: float, timeout_s: float = 600, poll_s: float = 0.5) -> Lease:
        """A slot on ``host``; waits up to ``timeout_s`` for one to come free (SandboxBusy after)."""

        deadline = time.monotonic() + timeout_s
        while True:
            lease = self.try_acquire(host, hold_s)
            if lease is not None:
                return lease
            if time.monotonic() >= deadline:
                raise SandboxBusy(
                    f"all {self.limit} sandbox slots of {host} are taken (KLONG_SANDBOXES_PER_HOST); none came "
                    f"free within {timeout_s:g} s"
                )
            time.sleep(poll_s)


def default_slots() -> HostSlots | None:
    """Slots from Django settings (KLONG_SANDBOXES_PER_HOST, REDIS_URL); None without Django or
    with a limit of 0 (no limit)."""
    try:

        if not settings.configured:
            return None
        limit = int(getattr(settings, "KLONG_SANDBOXES_PER_HOST", 0) or 0)
        url = settings.REDIS_URL
    except Exception:
        return None
    if limit <= 0:
        return None

    return HostSlots(redis.Redis.from_url(url), limit)
