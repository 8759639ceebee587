"""Loaded with ``-p tests.plugin``, before Django reads its settings.

Each test run gets a fresh data folder (SQLite file, embedded Redis socket, uploads) and its
own cache and channel prefixes, so runs never see each other's state, even on a shared Redis.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

os.environ["KLONG_TESTING"] = "1"
os.environ.setdefault("KLONG_DATA_DIR", tempfile.mkdtemp(prefix="klong-test-"))
# Collected static files outlive the run (tests/conftest.py collects them when a source changed):
# a fresh collection per run would cost seconds every time.
os.environ.setdefault("KLONG_STATIC_ROOT", str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "klong-staticfiles"))
_run = uuid.uuid4().hex[:8]
# Settings require a SECRET_KEY whenever DATABASE_URL is set (as in CI).
os.environ.setdefault("SECRET_KEY", f"klong-test-secret-{uuid.uuid4().hex}")
os.environ.setdefault("KLONG_CACHE_PREFIX", f"klong-test-{_run}")
os.environ.setdefault("KLONG_CHANNELS_PREFIX", f"klong-test-{_run}")

# klong_site/asgi.py sets the web server's database pool variables with os.environ.setdefault
# when a test module imports it for its WebSocket routes. This process's settings are loaded by
# then and do not change, but the subprocesses that tests start (workers, manage.py commands)
# would inherit them, so a test's outcome would depend on which modules were collected:
# put the environment back once collection is over.
_ASGI_VARIABLES = ("DB_POOL_SIZE", "DB_CONN_MAX_AGE")
_inherited = {name: os.environ.get(name) for name in _ASGI_VARIABLES}


def pytest_collection_finish(session) -> None:  # noqa: ARG001 (pytest's hook signature)
    for name, value in _inherited.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
