"""Worker heartbeats as the web reads them: a Redis hash, one entry per worker (worker/heartbeat.py
writes them every few seconds), read with one HGETALL however large the fleet.

The workers page, the dashboard, /metrics and the orphan rule (apps/jobs/services/orphans.py) all
read them here.
"""

from __future__ import annotations

import json
import time

import redis
from django.conf import settings

# Heartbeats older than this are dropped when read: a worker gone for a day is history.
FORGET_AFTER_S = 24 * 3600
# A worker is silent once it missed this many heartbeats and does not answer a ping either.
MISSED_BEATS = 3


def heartbeats_key() -> str:
    # Under the cache prefix, so deployments (or test runs) sharing one Redis never mix fleets.
    return f"{settings.CACHES['default']['KEY_PREFIX']}:worker-heartbeats"


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def read_heartbeats(now: float | None = None, client=None) -> dict[str, dict]:
    """Every worker's last heartbeat with its age in seconds; very old ones are dropped."""
    client = client or redis_client()
    now = time.time() if now is None else now
    beats = {}
    for name, raw in client.hgetall(heartbeats_key()).items():
        try:
            info = json.loads(raw)
            age = now - float(info["seen_at"])
        except (ValueError, KeyError, TypeError):
            client.hdel(heartbeats_key(), name)
            continue
        if age > FORGET_AFTER_S:
            client.hdel(heartbeats_key(), name)
            continue
        beats[info["name"]] = {**info, "age_s": max(0.0, age)}
    return beats



def silent_after_s() -> float:
    return MISSED_BEATS * settings.KLONG_WORKER_HEARTBEAT_S


def live_heartbeats() -> dict[str, dict]:
    """Workers whose last heartbeat is fresh; raises if Redis does not answer."""
    limit = silent_after_s()
    return {name: beat for name, beat in read_heartbeats().items() if beat["age_s"] <= limit}
