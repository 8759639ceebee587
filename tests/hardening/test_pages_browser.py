"""Every page in Chromium under the real Content-Security-Policy: no violation, no script error."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.factories import PASSWORD
from tests.hardening.test_access_matrix import EXPECTED, _params, url_names
from tests.hardening.world import build_world

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
READABLE = {"view_studio", "edit_papers", "launch_jobs"}


def test_every_page_runs_under_the_csp_without_errors(strict_page, live_server, personas):
    page = strict_page
    world = build_world("csp", personas["admin"])
    names = url_names()
    paths = sorted({reverse(name, kwargs=_params(name, names[name], world)) for name, spec in EXPECTED.items()
                    if ":" in name and name in names and spec[0] in READABLE and not name.endswith("-export")
                    and "download" not in name} | {"/api/docs/", f"/audit/compare/?runs={world.judge_run.pk}"})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
    page.goto(live_server.url + "/login/")
    page.fill("#id_username", personas["admin"].username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(live_server.url + "/")
    for path in paths:
        page.goto(live_server.url + path, wait_until="load")
    assert len(paths) > 30
    assert page.csp_violations == [] and errors == []
