from __future__ import annotations

import pytest

from apps.core.context_processors import NAVIGATION

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_user_logs_in_through_the_form_and_sees_the_dashboard(page, live_server, personas, browser_login):
    page.goto(live_server.url + "/")
    assert "/login/" in page.url
    browser_login(personas["viewer"])
    assert page.locator("h1").inner_text() == "Dashboard"
    assert page.locator(".count .label").all_inner_texts()[:2] == ["Papers", "Rubric versions"]
    assert page.locator("nav[aria-label=Main] a").all_inner_texts() == [label for label, _url in NAVIGATION]
    # A viewer may read but not launch work.
    assert page.locator("text=Run a worker self-test").count() == 0


def test_a_wrong_password_shows_an_error_on_the_login_form(page, live_server, personas):
    page.goto(live_server.url + "/login/")
    page.fill("#id_username", "viewer")
    page.fill("#id_password", "not-the-password")
    page.click("button[type=submit]")
    assert "did not match" in page.locator("[role=alert]").inner_text()
    assert "/login/" in page.url
