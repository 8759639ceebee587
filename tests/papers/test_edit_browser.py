"""The paper edit page in Debian's Chromium: two curators save at once, nobody's work is lost."""

from __future__ import annotations

import pytest

from apps.papers.models import Paper
from tests.factories import PASSWORD, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _edit_page(browser, live_server, user):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(live_server.url + "/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(live_server.url + "/")
    page.goto(f"{live_server.url}/papers/p/edit/")
    return page


def test_a_stale_save_shows_the_other_edit_and_keeps_the_users_input(browser, live_server, personas):
    Paper.objects.create(slug="p", title="Old title", venue="ICML", abstract="old abstract")
    alice = _edit_page(browser, live_server, personas["curator"])
    bob = _edit_page(browser, live_server, make_user("curator", "curator2"))
    try:
        bob.fill("#id_title", "Bob's title")
        bob.fill("#id_venue", "NeurIPS")
        bob.click("button[type=submit]")
        bob.wait_for_url(f"{live_server.url}/papers/p/")

        alice.fill("#id_abstract", "Alice's abstract,\nwritten over two lines")
        alice.fill("#id_venue", "ICLR")
        alice.click("button[type=submit]")
        banner = alice.get_by_test_id("edit-conflict")
        banner.wait_for()
        assert "Their changes to Title are taken in." in banner.inner_text()
        # Her input is where she typed it; Bob's title is in; Bob's venue is shown beside hers.
        assert alice.input_value("#id_title") == "Bob's title"
        assert alice.input_value("#id_abstract") == "Alice's abstract,\nwritten over two lines"
        assert alice.input_value("#id_venue") == "ICLR"
        assert "NeurIPS" in alice.get_by_test_id("saved-venue").inner_text()
        assert Paper.objects.get(slug="p").abstract == "old abstract"

        alice.click("button[type=submit]")
        alice.wait_for_url(f"{live_server.url}/papers/p/")
        paper = Paper.objects.get(slug="p")
        assert (paper.title, paper.venue, paper.abstract.replace("\r\n", "\n")) == (
            "Bob's title", "ICLR", "Alice's abstract,\nwritten over two lines")
    finally:
        alice.context.close()
        bob.context.close()
