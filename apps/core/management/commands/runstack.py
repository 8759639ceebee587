"""Run the whole app in the foreground: embedded Redis (if no REDIS_URL), daphne and a worker.

Each child runs in its own process group so that Ctrl-C reaches only this supervisor, which then
stops the children in order (web and worker first, Redis last) and kills any process group
that outlives the grace period: nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from klong_site import embedded_redis

GRACE_S = 10.0


@dataclass
class Child:
    name: str
    proc: subprocess.Popen


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
        self.children: list[Child] = []
        self._stopping = False
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            self._start_all(host, port, concurrency, no_worker)
            self._watch()
        finally:
            self._stop_all()

    def _on_signal(self, signum, frame) -> None:
        self._stopping = True

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        proc = subprocess.Popen(argv, start_new_session=True, cwd=settings.BASE_DIR,
                                env={**os.environ, **env} if env else None)
        self.children.append(Child(name, proc))

    def _start_all(self, host: str, port: int, concurrency: int, no_worker: bool) -> None:
        if settings.EMBEDDED_REDIS:
            proc = embedded_redis.start(settings.DATA_DIR)
            if proc is not None:
                self.children.append(Child("redis", proc))
            self.stdout.write(f"Embedded Redis on {embedded_redis.socket_path(settings.DATA_DIR)}")
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
                    os.path.join(bin_dir, "celery"), "-A", "worker.celery", "worker",
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

    def _watch(self) -> None:
        while not self._stopping:
            for child in self.children:
                code = child.proc.poll()
                if code is not None:
                    self.stderr.write(f"The {child.name} process exited with code {code}; stopping everything.")
                    self._stopping = True
                    self._failed = True
                    break
            time.sleep(0.2)

    def _stop_all(self) -> None:
        self.stdout.write("Stopping…")
        # Web and worker first (the worker finishes or requeues its task), Redis last.
        ordered = [c for c in self.children if c.name != "redis"] + [c for c in self.children if c.name == "redis"]
        for child in ordered:
            self._signal_group(child, signal.SIGTERM)
            try:
                child.proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                self.stderr.write(f"The {child.name} process did not stop in {GRACE_S:.0f} s; killing it.")
            # Whatever is left in its group (pool children of the worker) goes too.
            self._signal_group(child, signal.SIGKILL)
            child.proc.wait()
        self.stdout.write("Stopped.")
        if getattr(self, "_failed", False):
            sys.exit(1)

    @staticmethod
    def _signal_group(child: Child, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.proc.pid, sig)
