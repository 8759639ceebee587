from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from channels.layers import channel_layers
from django.conf import settings
from django.test import Client
from pytest_django.live_server_helper import LiveServer

from apps.core import embedded_redis, staticfiles
from tests.factories import make_personas


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests last: Playwright's sync API leaves an event loop in the main thread for the
    rest of the session, after which async_to_sync (channel layer, WebSocket tests) cannot run."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.fixture(scope="session", autouse=True)
def redis_server():
    """A real Redis for every test: the configured REDIS_URL, else the embedded redis-server."""
    proc = embedded_redis.start(settings.DATA_DIR, settings.EMBEDDED_REDIS_SOCKET) if settings.EMBEDDED_REDIS else None
    embedded_redis.ping(settings.REDIS_URL)
    yield settings.REDIS_URL
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """Each test's async_to_sync runs its own event loop; the channel layer (channels_redis) keeps a
    receive lock bound to the loop that first used it, and a socket a test left waiting holds it locked
    ("bound to a different event loop" in a later test). A new layer per test, as each daphne process has its own."""
    yield
    channel_layers.backends.clear()


@pytest.fixture(scope="session", autouse=True)
def static_files():
    """Pages link their static files through the collected manifest (whitenoise, hashed names):
    collect once, and again only when a source changed."""
    staticfiles.prepare()


@pytest.fixture(scope="session")
def live_server(request, static_files):
    """pytest-django's live server, its static files served by the app's own whitenoise from the
    collected files, as in production. (Django's static handler, pytest-django's default, looks
    names up in the source folders, where the content-hashed names pages link to do not exist.)"""
    addr = request.config.getvalue("liveserver") or os.getenv("DJANGO_LIVE_TEST_SERVER_ADDRESS") or "localhost"
    server = LiveServer(addr, start=False)
    server.thread.static_handler = lambda application: application
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def _remove_data_dir():
    yield
    if settings.DATA_DIR.name.startswith("klong-test-"):
        shutil.rmtree(settings.DATA_DIR, ignore_errors=True)


@pytest.fixture(scope="module")
def celery_worker(redis_server):
    """A real Celery worker consuming the real broker, in a thread of this process.

    It shares the test database settings; tests that use it need ``transactional_db`` so their
    rows are committed where the worker can read them. Module-scoped, so tests that run worker
    processes of their own (tests/jobs/test_worker_process.py) never race it for a task.
    """
    import celery.contrib.testing.tasks  # noqa: F401  (registers celery.ping for the start check)
    from celery.contrib.testing.worker import start_worker

    from klong_site.celery_app import app

    app.control.purge()
    with start_worker(app, pool="solo", perform_ping_check=True, shutdown_timeout=20) as worker:
        yield worker


@pytest.fixture
def personas(db) -> dict:
    """One user per role (admin, curator, operator, viewer) plus an outsider with no role."""
    return make_personas()


@pytest.fixture
def client_for(personas):
    """``client_for("operator")``: a Django test client logged in as that persona."""

    def make(role: str) -> Client:
        client = Client()
        client.force_login(personas[role])
        return client

    return make


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (Playwright's own browser download never runs)."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread for the rest of the
    # session; Django would then refuse the tests' own synchronous database calls.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    # Playwright evaluates string predicates (wait_for_function("...")) with eval, which the
    # site's CSP forbids; tests/hardening checks the pages under the real policy.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def strict_page(browser):
    """A page under the site's real Content-Security-Policy; CSP violations are collected.

    Predicates for ``wait_for_function`` must be functions (``"() => ..."``): string expressions
    are evaluated with eval, which the policy forbids.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.csp_violations = []
    page.on("console", lambda m: page.csp_violations.append(m.text)
            if "Content Security Policy" in m.text else None)
    yield page
    context.close()


@pytest.fixture
def browser_login(page, live_server):
    """Log ``user`` in through the real login form; returns the page on the dashboard."""
    from tests.factories import PASSWORD

    def login(user, on=None):
        """``on``: another page to log in on (``strict_page``); the ``page`` fixture's by default."""
        target = on or page
        target.goto(live_server.url + "/login/")
        target.fill("#id_username", user.username)
        target.fill("#id_password", PASSWORD)
        target.click("button[type=submit]")
        target.wait_for_url(live_server.url + "/")
        return target

    return login
