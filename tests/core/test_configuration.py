"""Bad configuration stops the start-up with one clear line that names the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from klong_site.env import env_bool, env_int, env_url

ROOT = Path(__file__).resolve().parents[2]


def manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY")}
    base.update(KLONG_DATA_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=base, capture_output=True, text=True, timeout=60
    )


def test_env_bool_rejects_a_non_boolean_and_names_the_variable(monkeypatch):
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="DEBUG='maybe' is not a boolean"):
        env_bool("DEBUG")


def test_env_int_rejects_text_and_values_below_the_minimum(monkeypatch):
    monkeypatch.setenv("KLONG_PORT", "eighty")
    with pytest.raises(ImproperlyConfigured, match="KLONG_PORT='eighty' is not an integer"):
        env_int("KLONG_PORT", 8000)
    monkeypatch.setenv("KLONG_PORT", "-1")
    with pytest.raises(ImproperlyConfigured, match="KLONG_PORT=-1 is below the minimum of 1"):
        env_int("KLONG_PORT", 8000, minimum=1)


def test_env_int_rejects_values_above_the_maximum(monkeypatch):
    # KLONG_MAX_JSON_DEPTH past what Python's json can parse would turn the 400 back into a 500.
    monkeypatch.setenv("KLONG_MAX_JSON_DEPTH", "5000")
    with pytest.raises(ImproperlyConfigured, match="KLONG_MAX_JSON_DEPTH=5000 is above the maximum of 500"):
        env_int("KLONG_MAX_JSON_DEPTH", 64, minimum=8, maximum=500)


def test_env_url_rejects_an_unsupported_scheme(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "mysql://db/klong")
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL='mysql://db/klong' is not a supported URL"):
        env_url("DATABASE_URL", ("postgres", "sqlite"))


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DEBUG", "maybe", "DEBUG='maybe' is not a boolean"),
        ("DATABASE_URL", "mysql://db/klong", "DATABASE_URL='mysql://db/klong' is not a supported URL"),
        ("REDIS_URL", "memcached://x", "REDIS_URL='memcached://x' is not a supported URL"),
        ("SECRET_KEY", "short", "SECRET_KEY is too short"),
        ("KLONG_ENDPOINT_KEY_VARS", "OPENAI_API_KEY,SECRET_KEY", "KLONG_ENDPOINT_KEY_PREFIX / KLONG_ENDPOINT_KEY_VARS "
         "would let endpoints send SECRET_KEY"),
    ],
)
def test_a_wrong_variable_stops_manage_py_with_a_clear_line(tmp_path, variable, value, message):
    result = manage(tmp_path, "check", **{variable: value})
    assert result.returncode == 2
    assert f"Configuration error: {message}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_shared_database_without_a_secret_key_is_refused(tmp_path):
    result = manage(tmp_path, "check", DATABASE_URL="postgres://klong@127.0.0.1:9/klong")
    assert result.returncode == 2
    assert "Configuration error: SECRET_KEY is missing: with DATABASE_URL set" in result.stderr


def test_an_unreachable_postgresql_gives_a_clear_message(tmp_path):
    result = manage(tmp_path, "preflight", DATABASE_URL="postgres://klong@127.0.0.1:9/klong", SECRET_KEY="k" * 40)
    assert result.returncode == 1
    assert "Cannot reach the database (PostgreSQL klong on 127.0.0.1:9)" in result.stderr
    assert "Check DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_redis_gives_a_clear_message(tmp_path):
    result = manage(tmp_path, "preflight", REDIS_URL="redis://127.0.0.1:9/0")
    assert result.returncode == 1
    assert "Cannot reach the redis (Redis on 127.0.0.1:9)" in result.stderr
    assert "Check REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_is_off_unless_asked():
    from django.conf import settings

    assert "DEBUG" not in os.environ or os.environ["DEBUG"].lower() in ("0", "false", "no", "off", "")
    assert settings.DEBUG is False


def test_a_secret_key_is_generated_once_per_data_folder(tmp_path):
    first = manage(tmp_path, "shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)")
    second = manage(tmp_path, "shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)")
    key = first.stdout.strip().splitlines()[-1]
    assert len(key) >= 50 and key == second.stdout.strip().splitlines()[-1]
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"
