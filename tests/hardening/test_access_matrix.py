"""Every URL and WebSocket route, for every role and an anonymous user: the answer each one gets.

The URL list comes from the urlconf itself and parameters are filled with real objects
(tests/hardening/world.py), so a URL added later is walked automatically; a URL without an entry
in EXPECTED fails the test until someone states who may read and write it.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.models import Session
from django.db import connection, transaction
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from apps.core.roles import ROLES
from apps.core.sockets import SessionBoundConsumer
from klong_site.asgi import application
from tests.hardening.world import World, build_world

pytestmark = pytest.mark.django_db

# The permission each method needs: a studio codename, ANY (any logged-in user, role or not),
# PUBLIC (anyone), or None (the method is not offered: 405 for whoever may get that far).
ANY, PUBLIC = "any", "public"
V, EP, ER, G, LJ, CJ, MU = "view_studio", "edit_papers", "edit_rubrics", "grade", "launch_jobs", "cancel_jobs", "manage_users"
EXPECTED: dict[str, tuple[str | None, ...]] = {
    # name: (GET, POST); methods left out are not offered
    "home": (V, None),
    "healthz": (V, None),
    "login": (PUBLIC, PUBLIC),
    "logout": (None, ANY),
    "api-tokens": (V, V),
    "papers:list": (V, None),
    "papers:import": (EP, EP),
    "papers:detail": (V, None),
    "papers:edit": (EP, EP),
    "rubrics:list": (V, None),
    "rubrics:editor": (V, None),
    "rubrics:versions": (V, None),
    "rubrics:save-version": (None, ER),
    "rubrics:restore": (None, ER),
    "trajectories:list": (V, None),
    "trajectories:upload": (EP, EP),
    "trajectories:annotations-export": (V, None),
    # The export page, and its button that queues the export job: an export is a read.
    "trajectories:dataset-export": (V, V),
    "trajectories:detail": (V, None),
    "trajectories:review": (None, G),
    "trajectories:split": (V, None),
    "trajectories:split-window": (V, None),
    "trajectories:pin-prefix": (None, ER),
    # Annotation queues: anyone reads them and their progress; graders make and work them.
    "trajectories:queues": (V, G),
    "trajectories:queue": (V, None),
    "trajectories:queue-label": (G, G),
    "judging:list": (V, None),
    "judging:detail": (V, None),
    "judging:leaf": (V, None),
    "judging:endpoints": (V, LJ),
    "judging:endpoint-test": (None, LJ),
    "judging:judge-eval": (V, LJ),
    "judging:checks": (V, ER),
    "jobs:list": (V, None),
    "jobs:launch": (LJ, LJ),
    "jobs:launch-pipeline": (None, LJ),
    "jobs:workers": (V, None),
    "jobs:checkpoints": (V, None),
    "jobs:checkpoint-download": (V, None),
    "jobs:artifact-download": (V, None),
    "jobs:checkpoint-endpoint": (None, LJ),
    "jobs:launch-selftest": (None, LJ),
    "jobs:detail": (V, None),
    "jobs:panel": (V, None),
    "jobs:cancel": (None, CJ),
    "jobs:retry": (None, LJ),
    "papers:candidates": (V, None),
    "papers:candidate-detail": (V, EP),
    "papers:candidate-import": (EP, EP),
    "papers:candidate-triage": (None, EP),
    "audit:home": (V, None),
    "audit:compare": (V, None),
    "audit:compare-export": (V, None),
    "audit:compare-metrics": (V, None),
    "audit:report": (V, None),
    "audit:report-export": (V, None),
    "audit:what-if": (V, None),
    "audit:import": (None, G),
    "audit:queue-create": (None, G),
    "audit:queue": (V, None),
    "audit:queue-reassign": (None, G),
    "datasets:list": (V, None),
    "datasets:detail": (V, None),
    # No session opens it, whatever the role: only a bearer token or an allowlisted address
    # (none by default; apps/ops, tests/ops/test_metrics.py).
    "metrics": (None, None),
    # The API: (GET, POST) and for detail routes (GET, POST, PATCH, DELETE).
    "api-root": (V, None),
    "api-schema": (V, None),
    "api-docs": (V, None),
    "api-token-list": (V, V),
    "api-token-detail": (None, None, None, V),
    "paper-list": (V, EP),
    "paper-detail": (V, None, EP, EP),
    "paper-import-paper": (None, EP),
    "paper-diff": (V, None),
    "paper-draft": (V, None),
    "paper-export": (V, None),
    "paper-problems": (V, None),
    "paper-stamp": (V, None),
    "paper-tree": (V, None),
    "paper-versions": (V, ER),
    "paper-restore": (None, ER),
    "paper-candidate-list": (V, None),
    "paper-candidate-detail": (V, None, EP, None),
    "paper-candidate-import-list": (None, EP),
    "paper-candidate-attach-pdf": (None, EP),
    "rubric-version-list": (V, None),
    "rubric-version-detail": (V, None),
    "rubric-node-list": (None, ER),
    "rubric-node-detail": (V, None, ER, ER),
    "rubric-node-duplicate": (None, ER),
    "rubric-node-move": (None, ER),
    "rubric-node-bulk-update": (None, ER),
    "trajectory-list": (V, None),
    "trajectory-detail": (V, None),
    "trajectory-turns": (V, None),
    "trajectory-search": (V, None),
    "trajectory-import-file": (None, EP),
    # An export is a read: any role may ask for one (400 here: nothing accepted to export).
    "trajectory-export-dataset": (None, V),
    "trajectory-review": (None, G),
    "trajectory-prefix": (None, ER),
    "trajectory-no-loss": (None, ER),
    "trajectory-annotations": (V, G),
    "annotation-label-list": (V, G),
    "annotation-label-detail": (None, None, G),
    "judge-run-list": (V, LJ),
    "judge-run-detail": (V, None),
    "judge-run-graded-tree": (V, None),
    "judge-run-grades": (V, None),
    "model-endpoint-list": (V, LJ),
    "model-endpoint-detail": (V, None, LJ, LJ),
    "model-endpoint-test-connection": (None, LJ),
    "rubric-check-list": (V, ER),
    "rubric-check-detail": (V, None, None, ER),
    "job-list": (V, LJ),
    "job-detail": (V, None),
    "job-metrics": (V, None),
    "job-artifacts": (V, None),
    "job-artifact-download": (V, None),
    "job-pipeline": (None, LJ),
    "job-cancel": (None, CJ),
    "job-retry": (None, LJ),
    "checkpoint-list": (V, None),
    "checkpoint-detail": (V, None),
    "checkpoint-download": (V, None),
    "worker-list": (V, None),
    "dataset-list": (V, LJ),
    "dataset-detail": (V, None, LJ),
    "audit-judges": (V, None),
    "audit-compare": (V, None),
    "audit-report": (V, None),
    # A what-if recomputes figures from posted weights; it stores nothing.
    "audit-what-if": (V, V),
    "audit-grades": (None, G),
    "audit-undo-grade": (None, G),
    "audit-import-judge-eval": (None, G),
    "audit-queue-list": (V, G),
    "audit-queue-detail": (V, None),
    "audit-queue-reassign": (None, G),
}
# /healthz answers 503 while a service is down: in the tests no worker answers its ping.
DEGRADED_OK = {"healthz"}


def _walk(patterns, namespace: str = ""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, namespace + (f"{entry.namespace}:" if entry.namespace else ""))
        elif isinstance(entry, URLPattern) and entry.name:
            yield namespace + entry.name, tuple(sorted(set(entry.pattern.regex.groupindex) - {"format"}))


def url_names() -> dict[str, tuple[str, ...]]:
    """Every named URL of the project (format-suffix twins folded into one), Django admin aside."""
    return {name: params for name, params in _walk(get_resolver().url_patterns) if not name.startswith("admin:")}


def _params(name: str, params: tuple[str, ...], world: World) -> dict[str, object]:
    """Real objects for a URL's parameters, chosen by the URL's app (namespace or router basename)."""
    by_app = {
        "papers": world.paper, "rubrics": world.paper, "paper": world.paper, "trajectories": world.trajectory,
        "trajectory": world.trajectory, "judging": world.judge_run, "judge-run": world.judge_run,
        "jobs": world.job, "job": world.job, "rubric-version": world.version, "rubric-node": world.node,
        "annotation-label": world.label, "model-endpoint": world.endpoint, "rubric-check": world.check,
        "api-token": world.token, "paper-candidate": world.candidate, "audit": world.audit_queue,
        "audit-queue": world.audit_queue, "datasets": world.dataset, "dataset": world.dataset,
    }
    if ":" in name:
        app = name.split(":")[0]
    else:  # a router route: "<basename>-<action>", and basenames hold hyphens too
        app = max((key for key in by_app if name.startswith(key + "-")), key=len, default=name)
    if "candidate" in name:
        by_app[app] = world.candidate
    if "checkpoint" in name:
        by_app[app] = world.checkpoint
    if name.startswith("trajectories:queue"):
        by_app[app] = world.annotation_queue
    if name in ("judging:endpoint-test",):
        by_app[app] = world.endpoint
    values = {}
    for param in params:
        if param == "number":  # a rubric version or a split window
            values[param] = 1 if "rubric" in name or "restore" in name else 0
        elif param == "node_index":
            values[param] = 1
        elif param == "fmt":
            values[param] = "csv"
        elif param == "artifact":
            values[param] = world.artifact.pk
        else:
            assert app in by_app, f"{name}: add an object for {param!r} to _params()"
            values[param] = getattr(by_app[app], param)
    return values


ROLE_NAMES = ("outsider", *ROLES)
# Everyone the matrix asks: no session at all, a user without a role, each role.
CALLERS = ("anonymous", *ROLE_NAMES)


def _has(role: str, need: str) -> bool:
    if need in (PUBLIC, ANY):
        return True
    return role in ROLES and need in ROLES[role]


def _need(name: str, method: str) -> str | None:
    spec = (*EXPECTED[name], None, None, None)
    return spec[("GET", "POST", "PATCH", "DELETE").index(method)]


def _verdict(name: str, role: str, method: str, status: int, writes: list[str], location: str = "") -> str | None:
    """None when the answer is right for ``role``; else what was wrong.

    A refused write must be refused outright (403, or 405 where the method is not offered), or at
    least leave the database untouched: some read pages answer a POST as they answer a GET.
    """
    need = _need(name, method)
    if role == "anonymous" and need != PUBLIC:
        if writes:
            return f"anonymous, yet it wrote: {writes[0][:120]}"
        refused = status in (401, 403) or (status == 302 and location.startswith("/login/"))
        return None if refused else f"anonymous got {status} {location}".strip()
    if role == "outsider" and PUBLIC not in EXPECTED[name]:
        return None if status == 403 else f"a user without a role got {status}, not 403"
    if need is not None and _has(role, need):
        if status in (401, 403, 405) or (status >= 500 and not (status == 503 and name in DEGRADED_OK)):
            return f"allowed ({need}) but got {status}"
        return None
    if writes:
        return f"refused ({need or 'not offered'}), yet it wrote: {writes[0][:120]}"
    if status in (403, 405) or (method == "POST" and need is None and status < 500):
        return None
    return f"needs {need or 'nothing (not offered)'} but got {status}"


WRITE_SQL = re.compile(r"^\s*(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


def _request(client: Client, method: str, path: str) -> tuple[int, list[str], str]:
    """One request, rolled back so every role meets the same objects; with the writes it ran."""
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        if method in ("PATCH", "DELETE"):
            response = getattr(client, method.lower())(path, content_type="application/json")
        else:
            response = getattr(client, method.lower())(path)
        transaction.set_rollback(True)
    writes = [q["sql"] for q in queries.captured_queries
              if WRITE_SQL.match(q["sql"]) and "django_session" not in q["sql"]]
    return response.status_code, writes, response.get("Location", "")


def _checks(role: str, name: str) -> list[str]:
    """The methods worth sending for this role: every denial, and each allowance once."""
    methods = []
    api = ":" not in name and name.endswith("-detail")
    for method in ("GET", "POST", "PATCH", "DELETE") if api else ("GET", "POST"):
        need = _need(name, method)
        # Everyone may read what viewers read: a higher role's GET of those pages proves nothing new.
        if role in ("anonymous", "outsider", "viewer") or need not in (V, None):
            methods.append(method)
    return methods


def test_every_url_has_an_expectation():
    missing = sorted(set(url_names()) - set(EXPECTED))
    assert missing == [], f"URLs with no stated access rule (add them to EXPECTED): {missing}"
    stale = sorted(set(EXPECTED) - set(url_names()))
    assert stale == [], f"EXPECTED names URLs that no longer exist: {stale}"


@pytest.mark.parametrize("role", CALLERS)
def test_every_url_answers_each_role_as_expected(role, personas):
    world = build_world("world", personas["admin"])
    client = Client()
    if role != "anonymous":
        client.force_login(personas[role])
    wrong = {}
    names = url_names()
    logging.getLogger("django.request").setLevel(logging.CRITICAL)
    try:
        for name in sorted(set(names) & set(EXPECTED)):
            if name == "logout":
                continue  # would end this client's session; the logout test below covers it
            path = reverse(name, kwargs=_params(name, names[name], world))
            for method in _checks(role, name):
                status, writes, location = _request(client, method, path)
                problem = _verdict(name, role, method, status, writes, location)
                if problem:
                    wrong[f"{method} {path} ({name})"] = problem
    finally:
        logging.getLogger("django.request").setLevel(logging.NOTSET)
    assert wrong == {}, f"{role}: {len(wrong)} wrong answers: {wrong}"


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_every_role_and_a_user_without_one_can_log_out(role, client_for):
    client = client_for(role)
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302  # logged out: back to the login page


def _websocket_routes() -> list[str]:
    """The routes of the WebSocket router inside the ASGI application's middleware."""
    inner = application.application_mapping["websocket"]
    while not hasattr(inner, "routes"):
        inner = getattr(inner, "application", None) or inner.inner
    return [str(route.pattern) for route in inner.routes]


def _ws_path(route: str, world: World) -> str:
    assert set(re.findall(r"<(?:\w+:)?(\w+)>", route)) <= {"job_id"}, f"{route}: add an object for its parameters"
    return "/" + re.sub(r"<(?:\w+:)?job_id>", str(world.job.pk), route)


@pytest.mark.django_db(transaction=True)
def test_every_websocket_answers_each_role_as_expected(personas):
    world = build_world("world", personas["admin"])
    routes = _websocket_routes()
    assert routes, "no WebSocket routes found in klong_site.asgi"

    async def attempt(path: str, headers: list[tuple[bytes, bytes]]) -> bool:
        communicator = WebsocketCommunicator(application, path, headers=headers)
        connected, _code = await communicator.connect(timeout=5)
        await communicator.disconnect()
        return connected

    def headers_for(user) -> list[tuple[bytes, bytes]]:
        headers = [(b"origin", b"http://localhost")]
        if user is not None:
            client = Client()
            client.force_login(user)
            headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
        return headers

    answers = {}
    for route in routes:
        path = _ws_path(route, world)
        for who in CALLERS:
            user = None if who == "anonymous" else personas[who]
            answers[(path, who)] = async_to_sync(attempt)(path, headers_for(user))
    expected = {key: key[1] not in ("anonymous", "outsider") for key in answers}
    assert answers == expected


# --- Sockets end with their session -----------------------------------------------------------

def test_every_websocket_route_is_bound_to_its_session():
    inner = application.application_mapping["websocket"]
    while not hasattr(inner, "routes"):
        inner = getattr(inner, "application", None) or inner.inner
    unbound = [str(route.pattern) for route in inner.routes
               if not issubclass(route.callback.consumer_class, SessionBoundConsumer)]
    assert unbound == []


def _logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


async def _open(path: str, client: Client) -> WebsocketCommunicator:
    """A socket opened by ``client``'s session, through the real ASGI stack (origin, session, auth)."""
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    communicator = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://localhost"), (b"cookie", cookie)])
    connected, _code = await communicator.connect(timeout=5)
    assert connected, path
    return communicator


async def _until_closed(communicator: WebsocketCommunicator, timeout: float = 3) -> list:
    """What the socket receives until it closes: event texts, then ("closed", code).

    Stops after ``timeout`` seconds of silence with the socket still open.
    """
    received = []
    while not await communicator.receive_nothing(timeout=timeout):
        output = await communicator.receive_output()
        if output["type"] == "websocket.close":
            return [*received, ("closed", output.get("code"))]
        received.append(output.get("text", "")[:40])
    return received


@pytest.mark.django_db(transaction=True)
def test_sockets_close_on_logout_and_receive_nothing_after(personas):
    """A viewer's /ws/jobs/ socket went on receiving events after logout."""
    from apps.jobs.progress import publish

    job = build_world("sockets", personas["admin"]).job
    leaving, staying = _logged_in(personas["viewer"]), _logged_in(personas["viewer"])

    async def scenario():
        sockets = [await _open(path, leaving) for path in ("/ws/jobs/", f"/ws/jobs/{job.pk}/")]
        other = await _open("/ws/jobs/", staying)
        snapshot = await sockets[1].receive_json_from(timeout=3)
        await sync_to_async(leaving.post)("/logout/")
        for step in range(10):
            await sync_to_async(publish)(job.pk, {"kind": "progress", "step": step})
        after = [await _until_closed(socket) for socket in sockets]
        # The same user's other session is not logged out: its socket still gets the events.
        still_open = await other.receive_json_from(timeout=3)
        await other.disconnect()
        return snapshot, after, still_open

    snapshot, after, still_open = async_to_sync(scenario)()
    assert snapshot["kind"] == "snapshot"
    assert after == [[("closed", 4401)], [("closed", 4401)]]
    assert still_open["kind"] == "progress"


@pytest.mark.django_db(transaction=True)
def test_sockets_close_when_their_user_loses_the_role(personas):
    viewer = personas["viewer"]
    viewers, curators = _logged_in(viewer), _logged_in(personas["curator"])

    async def scenario():
        losing, keeping = await _open("/ws/jobs/", viewers), await _open("/ws/jobs/", curators)
        await database_sync_to_async(viewer.groups.clear)()
        closed = await _until_closed(losing)
        untouched = await keeping.receive_nothing(timeout=0.5)
        await keeping.disconnect()
        return closed, untouched

    closed, untouched = async_to_sync(scenario)()
    assert closed == [("closed", 4403)]
    assert untouched


@pytest.mark.django_db(transaction=True)
@override_settings(KLONG_SOCKET_SESSION_CHECK_S=0.2)
def test_sockets_close_when_their_session_expires(personas):
    client = _logged_in(personas["viewer"])

    async def scenario():
        socket = await _open("/ws/jobs/", client)
        await socket.receive_nothing(timeout=0.5)  # a valid session passes the periodic check
        await database_sync_to_async(Session.objects.filter(session_key=client.session.session_key).update)(
            expire_date=timezone.now() - timedelta(seconds=1))
        return await _until_closed(socket)

    assert async_to_sync(scenario)() == [("closed", 4401)]
