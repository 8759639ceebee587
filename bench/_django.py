"""Shared start of every benchmark that needs Django: the embedded defaults in a fresh data folder.

Import it first (``import _django  # noqa: F401``): it sets the environment and calls
django.setup(), so nothing a developer has configured (DATABASE_URL, REDIS_URL) is touched.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for _name in ("DATABASE_URL", "REDIS_URL"):
    os.environ.pop(_name, None)
os.environ["KLONG_DATA_DIR"] = tempfile.mkdtemp(prefix="klong-bench-")
# Collected static files outlive the run: collected once, again only when a source changed.
os.environ.setdefault("KLONG_STATIC_ROOT", str(ROOT / "data" / "bench-staticfiles"))
os.environ["DJANGO_SETTINGS_MODULE"] = "klong_site.settings"
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from apps.core import staticfiles  # noqa: E402

staticfiles.prepare()  # pages link their static files through the collected manifest


def line(name: str, value: float, unit: str, target: str) -> None:
    """One figure, in the form every benchmark prints."""
    print(f"{name}: {value:.1f} {unit} (target: {target})", flush=True)


def timed_ms(func, repeat: int) -> list[float]:
    """Wall time of ``repeat`` calls, in milliseconds each."""
    import time

    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


@contextlib.contextmanager
def embedded_redis_running():
    """The embedded redis-server of the data folder (cache, login limits, channels), for the run."""
    from django.conf import settings

    from apps.core import embedded_redis

    redis_proc = embedded_redis.start(settings.DATA_DIR, settings.EMBEDDED_REDIS_SOCKET)
    try:
        yield
    finally:
        if redis_proc is not None:
            redis_proc.terminate()


@contextlib.contextmanager
def admin_client():
    """A migrated database with an admin, the embedded Redis running, and a test client logged in
    as the admin: what the page benchmarks measure through."""
    import io

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    from apps.core import embedded_redis

    redis_proc = embedded_redis.start(settings.DATA_DIR, settings.EMBEDDED_REDIS_SOCKET)
    try:
        setup_test_environment()
        call_command("migrate", verbosity=0)
        call_command("createadmin", password="bench-password-1", stdout=io.StringIO())
        client = Client()
        client.force_login(get_user_model().objects.filter(is_superuser=True).first())
        yield client
    finally:
        if redis_proc is not None:
            redis_proc.terminate()


class ServerURL(str):
    """A server's base URL that also carries its process id (for its memory figures)."""

    pid: int


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


@contextlib.contextmanager
def daphne_server(env: dict[str, str] | None = None):
    """daphne in its own process, as `make run` serves the app; yields its base URL (``.pid``: the
    server's process) once it listens. ``env``: variables to set for it (another settings module
    for a baseline).

    In this process it would share the GIL with the measuring client and time both.
    """
    import socket
    import subprocess
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port), "klong_site.asgi:application"],
        cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        base = ServerURL(f"http://127.0.0.1:{port}")
        base.pid = server.pid
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)
