"""`make run` on a fresh data folder: login, dashboard, healthz, a job over a WebSocket, clean Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.embedded]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """`make run` as a user would start it, in its own process group like a terminal job."""

    def __init__(self, data_dir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KLONG_", "DATABASE_URL", "REDIS_URL"))}
        env.update(KLONG_DATA_DIR=str(data_dir), KLONG_PORT=str(port), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"VENV={sys.prefix}"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, pattern: str, timeout: float = 240) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-60:]))

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def interrupt(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        return self.proc.wait(timeout=60)


def wait_until(check, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.25)


def test_make_run_serves_the_app_and_leaves_nothing_behind_on_ctrl_c(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stack = Stack(tmp_path / "data", port)
    try:
        stack.wait_for_line(r"KLong Studio is running at")
        password = stack.wait_for_line(r"Log in as 'admin' with password '([^']+)'").group(1)
        http = requests.Session()

        home = http.get(base + "/", allow_redirects=False, timeout=10)
        assert home.status_code == 302 and home.headers["Location"] == "/login/?next=/"

        http.get(base + "/login/", timeout=10)
        login = http.post(
            base + "/login/",
            data={"username": "admin", "password": password, "csrfmiddlewaretoken": http.cookies["csrftoken"]},
            allow_redirects=False, timeout=10,
        )
        assert login.status_code == 302 and login.headers["Location"] == "/"
        dashboard = http.get(base + "/", timeout=10)
        assert dashboard.status_code == 200 and "<h1>Dashboard</h1>" in dashboard.text
        assert "demo-sparse-routing" in http.get(base + "/papers/", timeout=10).text
        # The demo's tiny model, built offline, is a listed checkpoint and a local endpoint.
        assert any("Built the demo model" in line for line in stack.lines)
        assert "demo-tiny-chat" in http.get(base + "/jobs/checkpoints/", timeout=10).text
        assert "demo-tiny" in http.get(base + "/judging/endpoints/", timeout=10).text

        health = wait_until(lambda: (r := http.get(base + "/healthz", timeout=10)).status_code == 200 and r.json())
        assert health and health["status"] == "ok", health
        assert all(check["ok"] for check in health["checks"].values())

        job = http.post(
            base + "/api/jobs/", json={"kind": "selftest", "config": {"steps": 10, "delay_s": 0.1, "echo": "round-trip"}},
            headers={"X-CSRFToken": http.cookies["csrftoken"]}, timeout=10,
        ).json()
        events = []
        with connect(
            f"ws://127.0.0.1:{port}/ws/jobs/{job['id']}/",
            additional_headers={"Cookie": f"sessionid={http.cookies['sessionid']}", "Origin": base},
            open_timeout=10,
        ) as ws:
            while not (events and events[-1]["kind"] == "snapshot" and events[-1]["state"] == "succeeded"):
                events.append(json.loads(ws.recv(timeout=30)))
        assert events[-1]["result"]["echo"] == "round-trip"

        children = stack.descendants()
        names = {p.name() for p in children}
        assert {"redis-server", "daphne", "celery"} <= names or {"redis-server"} <= names, names
        cmdlines = " ".join(" ".join(p.cmdline()) for p in children)
        assert "daphne" in cmdlines and "celery" in cmdlines and "redis-server" in cmdlines
    finally:
        code = stack.interrupt()
    assert "Stopped." in "\n".join(stack.lines)
    survivors = [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert survivors == [], [p.cmdline() for p in survivors]
    assert code in (0, 2, 130, -signal.SIGINT)

    # A second start on the same data folder reuses everything and seeds nothing again.
    again = Stack(tmp_path / "data", port)
    try:
        again.wait_for_line(r"KLong Studio is running at")
        assert any("Demo data already present." in line for line in again.lines)
        assert not any("Successfully installed" in line for line in again.lines)
    finally:
        again.interrupt()
