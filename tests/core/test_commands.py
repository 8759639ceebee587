from __future__ import annotations

import io
import socket
import subprocess
import sys
from pathlib import Path

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
