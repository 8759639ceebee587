from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.core.roles import perm

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def test_createadmin_makes_a_superuser_with_a_generated_password_kept_private():
    out = io.StringIO()
    call_command("createadmin", stdout=out)
    password_file = settings.DATA_DIR / "admin-password.txt"
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.has_perm(perm("launch_jobs"))
    assert admin.check_password(password_file.read_text().strip())
    assert oct(password_file.stat().st_mode & 0o777) == "0o600"
    assert "Created admin user 'admin'" in out.getvalue()


def test_createadmin_is_idempotent():
    call_command("createadmin", password="first-password-1", stdout=io.StringIO())
    out = io.StringIO()
    call_command("createadmin", password="other-password-2", stdout=out)
    assert "already exists" in out.getvalue()
    assert get_user_model().objects.get(username="admin").check_password("first-password-1")


def test_createadmin_refuses_a_short_password():
    with pytest.raises(CommandError, match="at least 8 characters"):
        call_command("createadmin", username="boss", password="short", stdout=io.StringIO())
    assert not get_user_model().objects.filter(username="boss").exists()


def test_runstack_refuses_a_port_in_use_with_a_clear_message(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "manage.py", "runstack", "--port", str(port), "--no-worker"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={"PATH": "/usr/bin:/bin", "KLONG_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)},
        )
    assert result.returncode == 1
    assert f"Port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def _lines_of(proc: subprocess.Popen) -> list[str]:
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in proc.stdout), daemon=True).start()
    return lines


def _wait(check, what: str, lines: list[str], timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen; output:\n" + "\n".join(lines[-40:]))


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def test_runstack_restarts_a_child_that_died_says_so_and_stops_everything_on_ctrl_c(tmp_path):
    from apps.core import embedded_redis
    from klong_site.embedded_redis import embedded_redis_url

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data_dir = tmp_path / "data"
    stack = subprocess.Popen(
        [sys.executable, "manage.py", "runstack", "--port", str(port), "--no-worker"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={"PATH": "/usr/bin:/bin", "KLONG_DATA_DIR": str(data_dir), "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"},
    )
    lines = _lines_of(stack)
    try:
        _wait(lambda: any("KLong Studio is running" in line for line in lines), "start", lines)
        _wait(lambda: _answers(port), "the web server answering", lines)
        children = {("redis" if "redis" in " ".join(c.cmdline()) else "web"): c
                    for c in psutil.Process(stack.pid).children()}
        assert set(children) == {"redis", "web"}
        for child in children.values():
            child.kill()
        for name in ("redis", "web"):
            _wait(lambda name=name: f"The {name} process exited with code -9; restarting it in 1 s." in lines,
                  f"the {name} exit message", lines)
            _wait(lambda name=name: any(line.startswith(f"Restarted the {name} process") for line in lines),
                  f"the {name} restart", lines)
        embedded_redis.ping(embedded_redis_url(data_dir))
        _wait(lambda: _answers(port), "the web server answering again", lines)
        restarted = psutil.Process(stack.pid).children()
        assert len(restarted) == 2 and not {c.pid for c in restarted} & {c.pid for c in children.values()}
        os.killpg(stack.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert stack.wait(timeout=60) == 0
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGKILL)
    assert "Stopped." in lines
    assert not [c for c in restarted if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_runstack_stops_everything_when_a_child_keeps_dying(monkeypatch):
    from apps.core.management.commands import runstack

    monkeypatch.setattr(runstack, "RESTART_DELAYS_S", (0.0,))
    out, err = io.StringIO(), io.StringIO()
    supervisor = runstack.Supervisor(out, err)
    supervisor.add("worker", lambda: subprocess.Popen(["sh", "-c", "exit 3"], start_new_session=True))
    supervisor.watch(poll_s=0.01)  # returns once it gives up
    assert supervisor.failed
    assert err.getvalue().count("The worker process exited with code 3; restarting it in 0 s.") == 5
    assert err.getvalue().endswith(
        "The worker process exited with code 3; it was restarted 5 times in the last minute, "
        "so it is not restarted again. Stopping everything.\n"
    )
    assert out.getvalue().count("Restarted the worker process") == 5
