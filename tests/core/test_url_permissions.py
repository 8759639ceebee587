"""Every URL of the project, requested anonymously, is refused: new endpoints are covered automatically."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RoutePattern

from apps.jobs.routing import websocket_urlpatterns
from klong_site.asgi import application

# Pages that must answer anonymous users: logging in, and Django admin's own login page.
PUBLIC = {"/login/", "/admin/login/"}
SAMPLE = {"drf_format_suffix": ".json", "int": "1", "slug": "x", "str": "x", "path": "x", "uuid": "00000000-0000-4000-8000-000000000000"}


def _regex_sample(regex: str) -> str:
    """A concrete path for a regex pattern: a sample per named group, literal text kept."""

    def group(match: re.Match) -> str:
        name, body = match.group(1), match.group(2)
        if name == "format":  # DRF suffixes: '\.(?P<format>..)' or '(?P<format>\...)'
            return ".json" if body.startswith("\\.") else "json"
        return body.split("|")[0] if re.fullmatch(r"[\w|-]+", body) else "1"

    text = re.sub(r"\(\?P<(\w+)>((?:[^()]|\([^()]*\))*)\)", group, regex)
    text = text.removeprefix("^").removesuffix("$").removesuffix("\\Z")
    return text.replace("/?", "/").replace("\\.", ".").replace("\\", "")


def _route_sample(route: str) -> str:
    return re.sub(r"<(?:(\w+):)?\w+>", lambda m: SAMPLE[m.group(1) or "str"], route)


def all_paths(patterns=None, prefix: str = "") -> list[str]:
    paths = []
    for entry in patterns if patterns is not None else get_resolver().url_patterns:
        pattern = entry.pattern
        piece = _route_sample(str(pattern)) if isinstance(pattern, RoutePattern) else _regex_sample(pattern.regex.pattern)
        if isinstance(entry, URLResolver):
            paths += all_paths(entry.url_patterns, prefix + piece)
        elif isinstance(entry, URLPattern):
            paths.append("/" + prefix + piece)
    return sorted(set(paths))


def test_the_walker_finds_the_project_urls():
    paths = all_paths()
    for expected in ("/", "/healthz", "/jobs/1/", "/api/jobs/", "/api/jobs/1/cancel/", "/papers/", "/api/schema/"):
        assert expected in paths


@pytest.mark.embedded
@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
def test_every_url_refuses_anonymous_users(client, method):
    refused = {}
    for path in all_paths():
        if path in PUBLIC:
            continue
        response = getattr(client, method)(path)
        if response.status_code == 302:
            assert "login" in response["Location"], f"{path} redirects somewhere else: {response['Location']}"
        elif response.status_code not in (401, 403):
            refused[path] = response.status_code
    assert refused == {}, f"answered anonymous {method.upper()} without 302/401/403: {refused}"


@pytest.mark.django_db
def test_public_pages_are_only_the_login_pages(client):
    for path in PUBLIC:
        assert client.get(path).status_code == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("route", [str(p.pattern) for p in websocket_urlpatterns])
def test_every_websocket_refuses_anonymous_users(route):
    async def attempt() -> tuple[bool, int | None]:
        communicator = WebsocketCommunicator(application, "/" + _route_sample(route), headers=[(b"origin", b"http://localhost")])
        connected, code = await communicator.connect()
        await communicator.disconnect()
        return connected, code

    connected, code = async_to_sync(attempt)()
    assert not connected
    assert code == 4403
