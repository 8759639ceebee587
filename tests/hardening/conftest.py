"""Fixtures for the end-to-end and hardening tests: screenshots of failed browser tests, and a real
daphne server (HTTP and WebSocket) on the test database."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.jobs.test_worker_process import worker_database_url

ROOT = Path(__file__).resolve().parents[2]
# Kept by CI as artifacts (.ci/run); ignored by git.
ARTIFACTS = Path(os.environ.get("KLONG_TEST_ARTIFACTS", ROOT / "test-artifacts"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed browser test leaves a full-page screenshot and the page's HTML, named for the test.

    Taken here, in the report of the call phase, while the page is still open.
    """
    outcome = yield
    report = outcome.get_result()
    page = item.funcargs.get("strict_page") or item.funcargs.get("page")
    if report.when != "call" or not report.failed or page is None:
        return
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^\w.-]+", "_", item.nodeid)[-150:]
    try:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        (ARTIFACTS / f"{name}.html").write_text(page.content())
    except Exception as exc:  # a crashed page must not hide the test's own failure
        report.sections.append(("screenshot", f"no screenshot: {exc}"))


@pytest.fixture
def daphne_url(transactional_db):
    """daphne serving the app from its own process on the test database: real WebSockets.

    pytest-django's live server speaks WSGI only, so pages there fall back to polling.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": worker_database_url(), "DB_CONN_MAX_AGE": "0"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port), "klong_site.asgi:application"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"daphne did not start: {server.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
