from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from apps.core.roles import PERMISSIONS, ROLES, perm

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


def test_migrate_creates_one_group_per_role_with_its_permissions():
    for role, codenames in ROLES.items():
        group = Group.objects.get(name=role)
        assert sorted(group.permissions.values_list("codename", flat=True)) == sorted(codenames)


def test_admin_role_holds_every_studio_permission(personas):
    assert all(personas["admin"].has_perm(perm(c)) for c in PERMISSIONS)


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("curator", {"view_studio", "edit_papers", "edit_rubrics", "grade"}),
        ("operator", {"view_studio", "launch_jobs", "cancel_jobs"}),
        ("viewer", {"view_studio"}),
        ("outsider", set()),
    ],
)
def test_each_role_holds_exactly_its_permissions(personas, role, allowed):
    held = {c for c in PERMISSIONS if personas[role].has_perm(perm(c))}
    assert held == allowed


def test_an_unknown_permission_name_is_a_programming_error():
    with pytest.raises(KeyError):
        perm("launch_rockets")


@pytest.mark.parametrize("role", ["admin", "curator", "operator", "viewer"])
def test_every_role_can_read_the_pages(client_for, role):
    client = client_for(role)
    for url in ("/", "/papers/", "/rubrics/", "/trajectories/", "/judging/", "/jobs/"):
        assert client.get(url).status_code == 200, url


def test_a_user_without_a_role_gets_a_403_page_that_says_why(client_for):
    response = client_for("outsider").get("/papers/")
    assert response.status_code == 403
    assert b"Your account has no role yet" in response.content


def test_a_user_without_a_role_gets_403_from_the_api(client_for):
    assert client_for("outsider").get("/api/jobs/").status_code == 403


def test_anonymous_api_calls_get_401_with_a_token_challenge(client):
    response = client.get("/api/papers/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_an_api_token_authenticates_without_a_session(client, personas):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=personas["viewer"])
    response = client.get("/api/papers/", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200
    assert client.get("/api/papers/", HTTP_AUTHORIZATION="Token not-a-token").status_code == 401


def test_a_viewer_cannot_launch_a_job(client_for):
    response = client_for("viewer").post("/api/jobs/", {"kind": "selftest"}, content_type="application/json")
    assert response.status_code == 403


def test_a_curator_cannot_launch_a_job_from_the_page(client_for):
    response = client_for("curator").post("/jobs/selftest/")
    assert response.status_code == 403
    assert b"Your role does not allow this" in response.content


def test_the_admin_site_is_for_superusers_only(client_for):
    assert client_for("viewer").get("/admin/").status_code == 302
