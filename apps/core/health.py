"""Reachability of the database, Redis and the Celery workers, for /healthz and the dashboard."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from urllib.parse import urlparse

from celery import current_app
from django.conf import settings
from django.db import connection

from apps.core.embedded_redis import ping
from apps.jobs.workers import live_heartbeats, silent_after_s


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    ms: float

    def as_dict(self) -> dict:
        return asdict(self)


def _timed(name: str, probe) -> Check:
    start = time.perf_counter()
    try:
        detail = probe()
        ok = True
    except Exception as exc:  # every failure becomes a readable line, never a 500
        detail = describe_error(exc)
        ok = False
    return Check(name=name, ok=ok, detail=detail, ms=round((time.perf_counter() - start) * 1000, 1))


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no details'}"


def database_label() -> str:
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"SQLite at {db['NAME']}"
    return f"PostgreSQL {db.get('NAME')} on {db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}"


def redis_label() -> str:
    url = settings.REDIS_URL
    if settings.EMBEDDED_REDIS:
        return "embedded Redis (" + url.split("?")[0].removeprefix("unix://") + ")"
    # Never show a password from the URL.

    parsed = urlparse(url)
    return f"Redis on {parsed.hostname}:{parsed.port or 6379}"


def check_database() -> Check:
    def probe() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return database_label()

    return _timed("database", probe)


def check_redis() -> Check:
    def probe() -> str:
        ping(settings.REDIS_URL, timeout=1.0)
        return redis_label()

    return _timed("redis", probe)


def worker_names(timeout: float | None = None) -> list[str]:
    replies = current_app.control.ping(timeout=timeout or settings.KLONG_WORKER_PING_TIMEOUT) or []
    return sorted(name for reply in replies for name in reply)


def check_worker() -> Check:
    def probe() -> str:
        names = worker_names()
        if not names:
            raise RuntimeError("no Celery worker answered a ping")
        return f"{len(names)} worker(s): {', '.join(names)}"

    return _timed("worker", probe)


def check_worker_heartbeats() -> Check:
    """Workers with a fresh heartbeat in Redis (one read): for pages, where a ping broadcast would
    make a view wait up to a second for replies. /healthz still pings."""
    def probe() -> str:
        names = sorted(live_heartbeats())
        if not names:
            raise RuntimeError(f"no Celery worker sent a heartbeat in the last {silent_after_s():g} s")
        return f"{len(names)} worker(s): {', '.join(names)}"

    return _timed("worker", probe)


def check_all(worker: Callable[[], Check] = check_worker) -> list[Check]:
    """Database, Redis, then the workers through ``worker`` (the dashboard passes the heartbeat probe)."""
    checks = [check_database(), check_redis()]
    # A worker ping through a dead Redis would only repeat the Redis error after a timeout.
    if checks[1].ok:
        checks.append(worker())
    else:
        checks.append(Check("worker", False, "not checked: Redis is unreachable", 0.0))
    return checks
