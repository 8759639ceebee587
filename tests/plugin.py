"""Loaded with ``-p tests.plugin``, before Django reads its settings.

Each test run gets a fresh data folder (SQLite file, embedded Redis socket, uploads) and its
own cache and channel prefixes, so runs never see each other's state, even on a shared Redis.
"""

from __future__ import annotations

import os
import tempfile
import uuid

os.environ["KLONG_TESTING"] = "1"
os.environ.setdefault("KLONG_DATA_DIR", tempfile.mkdtemp(prefix="klong-test-"))
_run = uuid.uuid4().hex[:8]
# Settings require a SECRET_KEY whenever DATABASE_URL is set (as in CI).
os.environ.setdefault("SECRET_KEY", f"klong-test-secret-{uuid.uuid4().hex}")
os.environ.setdefault("KLONG_CACHE_PREFIX", f"klong-test-{_run}")
os.environ.setdefault("KLONG_CHANNELS_PREFIX", f"klong-test-{_run}")
