"""Run the whole app in the foreground: embedded Redis (if no REDIS_URL), daphne and a worker.

Each child runs in its own process group so that Ctrl-C reaches only this supervisor. A child that
dies is started again, with a message, after a pause that grows with each restart (Redis included:
the web server and the worker reconnect to it); one that dies again after MAX_RESTARTS_PER_MINUTE
restarts within a minute stops everything with a clear message instead of looping. Ctrl-C or SIGTERM stops
the children in order (web and worker first, Redis last) and kills any process group that outlives
the grace period: nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.core import embedded_redis

GRACE_S = 10.0
# Pauses before the 1st, 2nd, ... restart of a child within a minute.
RESTART_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 15.0)
MAX_RESTARTS_PER_MINUTE = 5


@dataclass
class Child:
    name: str
    start: Callable[[], subprocess.Popen]
    proc: subprocess.Popen | None = None
    restarted_at: deque[float] = field(default_factory=deque)  # monotonic times, the last minute's
    restart_at: float | None = None


class Supervisor:
    """Keeps the children running until ``stop()``; gives up on one that keeps dying."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.children: list[Child] = []
        self.out, self.err = out, err
        self.stopping = False
        self.failed = False

    def add(self, name: str, start: Callable[[], subprocess.Popen], proc: subprocess.Popen | None = None) -> None:
        self.children.append(Child(name, start, proc or start()))

    def stop(self, *args) -> None:
        self.stopping = True

    def watch(self, poll_s: float = 0.2) -> None:
        while not self.stopping:
            now = time.monotonic()
            for child in self.children:
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        self._restart(child, now)
                elif (code := child.proc.poll()) is not None:
                    self._died(child, f"exited with code {code}", now)
                if self.stopping:
                    break
            time.sleep(poll_s)

    def _died(self, child: Child, how: str, now: float) -> None:
        # Whatever is left in its group (a dead worker's pool processes) goes too.
        signal_group(child, signal.SIGKILL)
        while child.restarted_at and now - child.restarted_at[0] > 60:
            child.restarted_at.popleft()
        if len(child.restarted_at) >= MAX_RESTARTS_PER_MINUTE:
            self.err.write(f"The {child.name} process {how}; it was restarted {len(child.restarted_at)} times in the "
                           f"last minute, so it is not restarted again. Stopping everything.\n")
            self.failed = self.stopping = True
            return
        delay = RESTART_DELAYS_S[min(len(child.restarted_at), len(RESTART_DELAYS_S) - 1)]
        self.err.write(f"The {child.name} process {how}; restarting it in {delay:g} s.\n")
        self.err.flush()
        child.restart_at = now + delay

    def _restart(self, child: Child, now: float) -> None:
        child.restart_at = None
        child.restarted_at.append(now)
        try:
            child.proc = child.start()
        except Exception as exc:  # e.g. redis-server refusing to start
            child.proc = None
            self._died(child, f"could not be started ({exc})", now)
            return
        self.out.write(f"Restarted the {child.name} process (pid {child.proc.pid}).\n")
        self.out.flush()

    def stop_all(self) -> None:
        self.out.write("Stopping…\n")
        # Web and worker first (the worker finishes or requeues its task), Redis last.
        ordered = [c for c in self.children if c.name != "redis"] + [c for c in self.children if c.name == "redis"]
        for child in ordered:
            if child.proc is None:
                continue
            signal_group(child, signal.SIGTERM)
            try:
                child.proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                self.err.write(f"The {child.name} process did not stop in {GRACE_S:.0f} s; killing it.\n")
            # Whatever is left in its group (pool children of the worker) goes too.
            signal_group(child, signal.SIGKILL)
            child.proc.wait()
        self.out.write("Stopped.\n")


def signal_group(child: Child, sig: int) -> None:
    if child.proc is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, sig)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _gpu_count() -> int:
    # Counted in a child so the supervisor itself never imports torch (seconds, and memory).
    probe = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return int(done.stdout.strip() or 0) if done.returncode == 0 else 0


class Command(BaseCommand):
    help = "Start web server, Celery worker and (without REDIS_URL) an embedded Redis; Ctrl-C stops all."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=os.environ.get("KLONG_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("KLONG_PORT", "8000")))
        parser.add_argument("--concurrency", type=int, default=int(os.environ.get("KLONG_WORKER_CONCURRENCY", "2")))
        parser.add_argument("--no-worker", action="store_true", help="Web server only (workers run elsewhere).")

    def handle(self, *args, host: str, port: int, concurrency: int, no_worker: bool, **options) -> None:
        if not _port_free(host, port):
            raise CommandError(f"Port {port} on {host} is already in use. Stop what uses it or set KLONG_PORT.")
        self.supervisor = Supervisor(self.stdout, self.stderr)
        signal.signal(signal.SIGINT, self.supervisor.stop)
        signal.signal(signal.SIGTERM, self.supervisor.stop)
        try:
            self._start_all(host, port, concurrency, no_worker)
            self.supervisor.watch()
        finally:
            self.supervisor.stop_all()
        if self.supervisor.failed:
            sys.exit(1)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        def start() -> subprocess.Popen:
            return subprocess.Popen(argv, start_new_session=True, cwd=settings.BASE_DIR,
                                    env={**os.environ, **env} if env else None)

        self.supervisor.add(name, start)

    def _start_all(self, host: str, port: int, concurrency: int, no_worker: bool) -> None:
        if settings.EMBEDDED_REDIS:
            proc = embedded_redis.start(settings.DATA_DIR, settings.EMBEDDED_REDIS_SOCKET)
            if proc is not None:  # None: one already answers on the socket, and it is not ours to watch
                self.supervisor.add("redis", _start_embedded_redis, proc)
            self.stdout.write(f"Embedded Redis on {settings.EMBEDDED_REDIS_SOCKET}")
        else:
            try:
                embedded_redis.ping(settings.REDIS_URL, timeout=2.0)
            except Exception as exc:
                raise CommandError(f"Cannot reach Redis at REDIS_URL: {exc}") from None
        bin_dir = os.path.dirname(sys.executable)
        self._spawn(
            "web",
            [os.path.join(bin_dir, "daphne"), "-b", host, "-p", str(port), "--proxy-headers", "klong_site.asgi:application"],
        )
        if not no_worker:
            gpus = _gpu_count()
            queues = "cpu,judge,gpu" if gpus else "cpu,judge"
            self._spawn(
                "worker",
                [
                    os.path.join(bin_dir, "celery"), "-A", "klong_site.celery_app", "worker",
                    "-Q", queues, "-c", str(concurrency), "-n", f"klong-{queues.replace(',', '-')}@%h",
                    "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                ],
                # One machine, one worker: it takes jobs asking for up to all of its GPUs.
                env={"KLONG_WORKER_GPUS": os.environ.get("KLONG_WORKER_GPUS", str(max(gpus, 1)))},
            )
        shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
        self.stdout.write(self.style.SUCCESS(f"KLong Studio is running at http://{shown}:{port}/  (Ctrl-C stops it)"))
        self.stdout.write(self._login_hint())
        sys.stdout.flush()

    @staticmethod
    def _login_hint() -> str:
        password_file = settings.DATA_DIR / "admin-password.txt"
        if password_file.exists():
            password = password_file.read_text().strip()
            return f"Log in as 'admin' with password '{password}' (kept in {password_file})."
        return "Log in with your admin account (python manage.py createadmin --username NAME makes one)."


def _start_embedded_redis() -> subprocess.Popen:
    proc = embedded_redis.start(settings.DATA_DIR, settings.EMBEDDED_REDIS_SOCKET)
    if proc is None:
        raise RuntimeError("another redis-server answers on its socket now")
    return proc
