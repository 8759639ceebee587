"""Security: headers and production settings, CSRF, the login rate limit, API tokens, uploads, secrets."""

from __future__ import annotations

import html
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from apps.core.models import ApiToken
from apps.core.tokens import hash_key
from tests.factories import PASSWORD
from tests.hardening.test_access_matrix import EXPECTED, _params, url_names
from tests.hardening.world import build_world
from tests.rubrics.helpers import small_tree

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


# --- Headers and production settings ----------------------------------------------------------

def test_pages_carry_a_csp_with_a_fresh_script_nonce_and_deny_framing(client_for):
    client = client_for("viewer")
    first, second = client.get("/"), client.get("/")
    policy = first["Content-Security-Policy"]
    assert "script-src 'self' 'nonce-" in policy and "'unsafe-inline'" not in policy.split("style-src")[0]
    assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    assert nonce != re.search(r"'nonce-([^']+)'", second["Content-Security-Policy"]).group(1)
    assert first["X-Frame-Options"] == "DENY" and first["X-Content-Type-Options"] == "nosniff"
    # Plain HTTP in development: no HSTS (it would pin the browser to an HTTPS that is not there).
    assert "Strict-Transport-Security" not in first


def test_every_inline_script_carries_the_nonce(client_for):
    """Inline scripts without the nonce would be blocked: every one in the templates must carry it."""
    untagged = []
    for template in (ROOT / "templates").rglob("*.html"):
        for tag in re.findall(r"<script\b[^>]*>", template.read_text()):
            if "src=" not in tag and "application/json" not in tag and "csp_nonce" not in tag:
                untagged.append(f"{template.relative_to(ROOT)}: {tag}")
    assert untagged == []


@override_settings(SECURE_HSTS_SECONDS=31536000, SECURE_SSL_REDIRECT=True, SESSION_COOKIE_SECURE=True)
def test_behind_tls_pages_send_hsts_and_plain_http_is_redirected(client_for):
    client = client_for("viewer")
    assert client.get("/papers/")["Location"].startswith("https://")
    assert client.get("/papers/", secure=True)["Strict-Transport-Security"] == "max-age=31536000"
    # The load balancer's health probe and Prometheus's scrape stay on plain HTTP.
    assert client.get("/healthz").status_code != 301
    assert client.get("/metrics").status_code != 301


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = {**os.environ, "DEBUG": "0", "SECURE_COOKIES": "1", "KLONG_DATA_DIR": str(tmp_path),
           "SECRET_KEY": "x7#Kq!2vLp9@Zr4$Tn6^Wb8&Yc1*Hd3(Jf5)Mg0_Nh-Pk+Qs=Rt~Uv", "ALLOWED_HOSTS": "studio.example.org"}
    env.pop("KLONG_TESTING", None)
    done = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


# --- CSRF -------------------------------------------------------------------------------------

def test_every_state_changing_url_refuses_a_session_post_without_the_csrf_token(personas):
    """Walks every URL that takes a POST: with a session cookie but no CSRF token, it must be 403."""
    world = build_world("csrf", personas["admin"])
    client = Client(enforce_csrf_checks=True)
    client.force_login(personas["admin"])
    names = url_names()
    accepted = {}
    for name, spec in EXPECTED.items():
        if name not in names or len(spec) < 2 or spec[1] is None or name in ("login", "metrics"):
            continue
        path = reverse(name, kwargs=_params(name, names[name], world))
        response = client.post(path, {"name": "x"})
        if response.status_code != 403 or b"CSRF" not in response.content:
            accepted[path] = response.status_code
    assert accepted == {}


def test_the_login_form_needs_its_csrf_token(personas):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/login/", {"username": personas["viewer"].username, "password": PASSWORD})
    assert response.status_code == 403


def test_token_authenticated_api_calls_need_no_csrf_token(personas):
    from apps.core.tokens import create_token

    _token, key = create_token(personas["curator"], "script")
    client = Client(enforce_csrf_checks=True)
    response = client.post("/api/papers/", {"slug": "by-token", "title": "By token"},
                           content_type="application/json", HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 201, response.content


# --- Login rate limit -------------------------------------------------------------------------

@override_settings(KLONG_LOGIN_MAX_FAILURES=3, KLONG_LOGIN_WINDOW_S=60)
def test_logins_are_refused_after_repeated_failures_with_a_clear_message(personas):
    user = personas["viewer"]
    # Addresses of their own: failures are kept in the cache (Redis) for the whole test run.
    client = Client(REMOTE_ADDR="10.9.0.1")
    for _ in range(3):
        assert client.post("/login/", {"username": user.username, "password": "wrong"}).status_code == 200
    # Even the right password is refused while the lock lasts.
    locked = client.post("/login/", {"username": user.username, "password": PASSWORD})
    assert locked.status_code == 429
    assert "Too many failed logins. Try again in 1 minute." in locked.content.decode()
    assert "_auth_user_id" not in client.session
    # Another account from the same address, and this account from another address, still log in.
    assert client.post("/login/", {"username": personas["curator"].username, "password": PASSWORD}).status_code == 302
    elsewhere = Client(REMOTE_ADDR="10.9.0.2")
    assert elsewhere.post("/login/", {"username": user.username, "password": PASSWORD}).status_code == 302


def test_failures_sent_in_parallel_all_count():
    from concurrent.futures import ThreadPoolExecutor

    from django.test import RequestFactory

    from apps.core.login import _count, _keys, record_failure

    request = RequestFactory().post("/login/", REMOTE_ADDR="10.9.2.1")
    # A burst of guesses at once: a read-then-write counter would count many of them once.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: record_failure(request, "burst-user"), range(40)))
    per_user, per_address = (_count(key)[0] for key in _keys(request, "burst-user"))
    assert (per_user, per_address) == (40, 40)


@override_settings(KLONG_LOGIN_MAX_FAILURES=3)
def test_a_successful_login_clears_the_failures(personas):
    user, address = personas["viewer"], "10.9.1.1"
    for _ in range(2):
        Client(REMOTE_ADDR=address).post("/login/", {"username": user.username, "password": "wrong"})
    assert Client(REMOTE_ADDR=address).post("/login/", {"username": user.username, "password": PASSWORD}).status_code == 302
    for _ in range(2):
        Client(REMOTE_ADDR=address).post("/login/", {"username": user.username, "password": "wrong"})
    assert Client(REMOTE_ADDR=address).post("/login/", {"username": user.username, "password": PASSWORD}).status_code == 302


LOGIN_PATHS = ("/login/", "/admin/login/")


@override_settings(KLONG_LOGIN_MAX_FAILURES=3, KLONG_LOGIN_WINDOW_S=60)
def test_every_login_path_shares_one_limit(personas):
    """Failures on the site's login and on the admin's count together; both refuse once locked."""
    admin = personas["admin"]
    admin.is_staff = True
    admin.save()
    client = Client(REMOTE_ADDR="10.9.3.1")
    for path in ("/admin/login/", "/login/", "/admin/login/"):
        assert client.post(path, {"username": admin.username, "password": "wrong"}).status_code == 200
    for path in LOGIN_PATHS:
        locked = client.post(path, {"username": admin.username, "password": PASSWORD})
        assert locked.status_code == 429, path
        assert "Too many failed logins. Try again in 1 minute." in locked.content.decode()
        assert 0 < int(locked["Retry-After"]) <= 60
        assert "_auth_user_id" not in client.session


@override_settings(KLONG_LOGIN_MAX_FAILURES=3, KLONG_LOGIN_WINDOW_S=60)
def test_spellings_of_a_username_share_its_count(personas):
    """Django's login form reads full-width letters as plain ones (NFKC): so must the count."""
    user = personas["viewer"]
    # A user of its own, so the failures below cannot lock the viewer out by address alone.
    client = Client(REMOTE_ADDR="10.9.4.1")
    assert client.post("/login/", {"username": "ｖｉｅｗｅｒ", "password": PASSWORD}).status_code == 302
    client.post("/logout/")
    for spelling in ("ｖｉｅｗｅｒ", "VIEWER", "Ｖｉｅｗｅｒ"):
        assert client.post("/login/", {"username": spelling, "password": "wrong"}).status_code == 200
    for spelling in (user.username, "ｖｉｅｗｅｒ", "ｖiewer"):
        assert client.post("/login/", {"username": spelling, "password": PASSWORD}).status_code == 429, spelling
    assert "_auth_user_id" not in client.session


# --- API tokens -------------------------------------------------------------------------------

def test_a_token_created_on_the_page_works_once_shown_and_stops_when_revoked(client_for, personas):
    page = client_for("viewer")
    created = page.post("/account/tokens/", {"name": "laptop"})
    key = re.search(r'<code id="new-token-key">([^<]+)</code>', created.content.decode()).group(1)
    assert created["Cache-Control"] == "no-store"
    # Stored hashed: the key is in no column, and the list page never shows it again.
    token = ApiToken.objects.get(name="laptop")
    assert token.key_hash == hash_key(key) and key not in json.dumps(list(ApiToken.objects.values()), default=str)
    assert key not in page.get("/account/tokens/").content.decode()
    api = Client()
    assert api.get("/api/papers/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200
    # A viewer's token writes nothing a viewer may not write.
    assert api.post("/api/papers/", {"slug": "x"}, HTTP_AUTHORIZATION=f"Token {key}").status_code == 403
    page.post("/account/tokens/", {"revoke": token.pk})
    assert api.get("/api/papers/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 401
    assert personas["viewer"].api_tokens.count() == 0


def test_tokens_through_the_api_show_the_key_once_and_only_to_their_owner(client_for, personas):
    owner, other = client_for("operator"), client_for("curator")
    created = owner.post("/api/tokens/", {"name": "ci"}, content_type="application/json")
    assert created.status_code == 201 and len(created.json()["key"]) >= 40
    listed = owner.get("/api/tokens/").json()["results"]
    assert [t["name"] for t in listed] == ["ci"] and "key" not in listed[0]
    token_id = created.json()["id"]
    assert other.get("/api/tokens/").json()["results"] == []
    assert other.delete(f"/api/tokens/{token_id}/").status_code == 404
    # A user manager may revoke anyone's token (a leaked key).
    assert client_for("admin").delete(f"/api/tokens/{token_id}/").status_code == 204


def test_a_token_needs_a_name(client_for):
    response = client_for("viewer").post("/api/tokens/", {"name": "  "}, content_type="application/json")
    assert response.status_code == 400 and "name" in response.json()


def test_a_token_cannot_mint_tokens(client_for, personas):
    """A leaked key that could mint keys would outlive its own revocation: creating needs a session."""
    from apps.core.tokens import create_token

    _token, key = create_token(personas["operator"], "script")
    api = Client(HTTP_AUTHORIZATION=f"Token {key}")
    refused = api.post("/api/tokens/", {"name": "child"}, content_type="application/json")
    assert refused.status_code == 403 and "not with another API token" in refused.json()["detail"]
    assert list(personas["operator"].api_tokens.values_list("name", flat=True)) == ["script"]
    # The token still lists and revokes, and a session still creates.
    assert [t["name"] for t in api.get("/api/tokens/").json()["results"]] == ["script"]
    assert client_for("operator").post("/api/tokens/", {"name": "laptop"},
                                       content_type="application/json").status_code == 201


def test_a_tokens_last_use_is_stamped_at_most_once_a_minute(personas):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.core.tokens import create_token

    token, key = create_token(personas["viewer"], "script")
    api = Client(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/papers/").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None
    with CaptureQueriesContext(connection) as queries:
        assert api.get("/api/papers/").status_code == 200
    assert not [q for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("UPDATE")]


@pytest.mark.django_db(transaction=True)
def test_token_reads_do_not_wait_for_a_write_in_progress(personas):
    """Stamping last_used_at gives way to a lock held elsewhere (SQLite: a long import holds the whole
    database; PostgreSQL: the token's row): the read answers at once, the stamp waits a minute."""
    import threading
    import time

    from django.db import connection, transaction

    from apps.core.tokens import create_token

    token, key = create_token(personas["viewer"], "script")
    holding, release = threading.Event(), threading.Event()

    def hold_a_write_lock() -> None:
        try:
            with transaction.atomic():
                ApiToken.objects.filter(pk=token.pk).update(name="busy")
                holding.set()
                release.wait(timeout=5)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_a_write_lock)
    holder.start()
    try:
        assert holding.wait(timeout=10)
        started = time.monotonic()
        answers = [Client().get("/api/papers/", HTTP_AUTHORIZATION=f"Token {key}").status_code for _ in range(3)]
        elapsed = time.monotonic() - started
    finally:
        release.set()
        holder.join()
    assert answers == [200, 200, 200]
    assert elapsed < 2, f"three reads took {elapsed:.1f} s behind a write lock"
    token.refresh_from_db()
    assert token.last_used_at is None
    if connection.vendor == "sqlite":  # the brief wait was for that write only
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout")
            assert cursor.fetchone()[0] == 20_000


# --- Conflicts ---------------------------------------------------------------------------------

def test_deleting_a_paper_that_judge_runs_still_use_is_a_409_naming_them(client_for, personas):
    world = build_world("in use", personas["admin"])
    response = client_for("curator").delete(f"/api/papers/{world.paper.pk}/")
    assert response.status_code == 409
    assert response.json()["detail"].startswith("It is still used by judge runs")
    assert world.paper.__class__.objects.filter(pk=world.paper.pk).exists()


# --- NUL characters ---------------------------------------------------------------------------

def test_a_nul_in_a_query_parameter_is_refused_with_a_message_on_every_page(client_for, personas):
    """PostgreSQL refuses NUL in text: ``?q=%00`` on a list page answered 503 "database unavailable"."""
    world = build_world("nul", personas["admin"])
    client = client_for("viewer")
    names = url_names()
    wrong = {}
    for name in sorted(set(names) & set(EXPECTED)):
        if EXPECTED[name][0] is None or name == "metrics":
            continue
        path = reverse(name, kwargs=_params(name, names[name], world))
        response = client.get(path, {"q": "attention\x00"})
        if (response.status_code != 400
                or "The field 'q' contains a NUL character" not in html.unescape(response.content.decode())):
            wrong[path] = response.status_code
    assert wrong == {}


def test_a_nul_in_a_form_field_a_json_body_or_a_path_is_refused_with_a_message(client_for):
    page = client_for("viewer").post("/account/tokens/", {"name": "laptop\x00"})
    assert page.status_code == 400
    assert "The field 'name' contains a NUL character" in html.unescape(page.content.decode())
    api = client_for("curator").post("/api/papers/", {"slug": "nul", "title": "NUL", "blacklist": ["a\x00b"]},
                                     content_type="application/json")
    assert api.status_code == 400
    assert api.json() == {"detail": "The field 'blacklist.0' contains a NUL character (\\0), which is not "
                                    "allowed: remove it and try again."}
    from apps.papers.models import Paper

    assert not ApiToken.objects.exists() and not Paper.objects.filter(slug="nul").exists()
    # API detail routes take any character but "/" and "." as the lookup.
    lookup = client_for("viewer").get("/api/model-endpoints/a%00b/")
    assert lookup.status_code == 400 and "The field 'name' contains a NUL character" in lookup.json()["detail"]


# --- Uploads ----------------------------------------------------------------------------------

def _zip(members: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    buffer.seek(0)
    buffer.name = "paper.zip"
    return buffer


def _forged_zip_bomb() -> io.BytesIO:
    """A zip whose headers claim a small rubric.json while the deflated data expands to 20 MB."""
    buffer = _zip({"rubric.json": b"0" * 20_000_000})
    data = bytearray(buffer.getvalue())
    # Patch the uncompressed size in the local header (offset 22) and the central directory (24).
    local = data.index(b"PK\x03\x04")
    data[local + 22:local + 26] = (1000).to_bytes(4, "little")
    central = data.index(b"PK\x01\x02")
    data[central + 24:central + 28] = (1000).to_bytes(4, "little")
    forged = io.BytesIO(bytes(data))
    forged.name = "paper.zip"
    return forged


@override_settings(KLONG_MAX_UPLOAD_BYTES=1_000_000)
@pytest.mark.parametrize("case", ["bomb", "forged-bomb", "traversal", "not-a-zip"])
def test_paper_archives_that_would_harm_are_refused_with_a_message(client_for, case):
    upload = {
        "bomb": lambda: _zip({"rubric.json": json.dumps(small_tree()).encode(), "paper.md": b"a" * 5_000_000}),
        "forged-bomb": _forged_zip_bomb,
        "traversal": lambda: _zip({"../../rubric.json": json.dumps(small_tree()).encode()}),
        "not-a-zip": lambda: io.BytesIO(b"MZ\x90\x00 not a zip"),
    }[case]()
    upload.name = "paper.zip"
    response = client_for("curator").post("/api/papers/import/", {"file": upload})
    assert response.status_code in (400, 413), response.content
    assert response.json()["detail"]
    page = client_for("curator").post("/papers/import/", {"file": (upload.seek(0), upload)[1]})
    assert page.status_code in (400, 413) and b'role="alert"' in page.content
    from apps.papers.models import Paper

    assert not Paper.objects.exists()


def _tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    buffer.seek(0)
    buffer.name = "submission.tar.gz"
    return buffer


def _member(name: str, size: int = 0, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    for key, value in fields.items():
        setattr(info, key, value)
    return info


@override_settings(KLONG_MAX_UPLOAD_BYTES=64 * 1024, KLONG_MAX_UNPACKED_BYTES=320 * 1024)
@pytest.mark.parametrize("case", ["traversal", "absolute", "symlink-out", "bomb"])
def test_submission_archives_that_would_harm_are_refused_with_a_message(client_for, personas, case, settings):
    world = build_world("upload", personas["admin"])
    upload = {
        "traversal": lambda: _tar_gz([(_member("../../escape.py", 2), b"x\n")]),
        "absolute": lambda: _tar_gz([(_member("/etc/cron.d/evil", 2), b"x\n")]),
        "symlink-out": lambda: _tar_gz([(_member("link", type=tarfile.SYMTYPE, linkname="/etc/passwd"), None)]),
        # 1 MB of zeros packs into about a kilobyte; it expands past KLONG_MAX_UNPACKED_BYTES.
        "bomb": lambda: _tar_gz([(_member("zeros.bin", 1_000_000), b"\0" * 1_000_000)]),
    }[case]()
    response = client_for("operator").post(
        "/api/judge-runs/", {"paper": world.paper.slug, "endpoint": world.endpoint.name, "upload": upload})
    assert response.status_code == 400, response.content
    assert "Submission refused" in " ".join(response.json()["detail"])
    assert not (Path(settings.DATA_DIR) / "etc").exists()
    assert list((Path(settings.DATA_DIR) / "submissions").glob("*/escape.py")) == []


@override_settings(KLONG_MAX_UPLOAD_BYTES=10_000)
def test_a_trajectory_upload_over_the_limit_is_refused_with_a_message(client_for):
    upload = io.BytesIO(b'{"messages": []}\n' * 2000)
    upload.name = "runs.jsonl"
    response = client_for("curator").post("/api/trajectories/import/", {"file": upload})
    assert response.status_code == 413
    assert "limit" in json.dumps(response.json())


# --- Secrets ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["sk-live-0123456789abcdef0123456789", "Bearer abc", "my key"])
def test_an_endpoint_takes_the_name_of_a_variable_never_a_key(client_for, value):
    response = client_for("operator").post("/api/model-endpoints/", {
        "name": "leaky", "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": value,
    }, content_type="application/json")
    assert response.status_code == 400 and "api_key_env" in response.json()


def test_an_endpoints_key_is_never_shown_only_its_variable(client_for, personas, monkeypatch):
    world = build_world("secret", personas["admin"])
    monkeypatch.setenv("WORLD_KEY", "sk-the-real-secret-value-123")
    for path in ("/api/model-endpoints/", f"/api/model-endpoints/{world.endpoint.name}/", "/judging/endpoints/",
                 f"/api/judge-runs/{world.judge_run.pk}/"):
        body = client_for("admin").get(path).content.decode()
        assert "sk-the-real-secret-value-123" not in body
    assert "WORLD_KEY" in client_for("viewer").get("/judging/endpoints/").content.decode()
