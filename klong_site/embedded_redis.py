"""Where the embedded Redis listens: a unix socket in the data folder (settings compute its
address here; apps/core/embedded_redis.py starts it).

A unix socket in the data folder needs no free TCP port (a Redis usually listens on 6379 already)
and no other user on the machine can reach it.
"""

from __future__ import annotations

import hashlib
import tempfile
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
