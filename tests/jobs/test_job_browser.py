from __future__ import annotations

import pytest

from apps.jobs.models import Job

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_operator_launches_a_job_from_the_form_and_watches_it_finish(
    page, live_server, personas, browser_login, celery_worker
):
    browser_login(personas["operator"])
    page.goto(live_server.url + "/jobs/new/?kind=selftest")
    page.fill("#id_config-steps", "6")
    page.fill("#id_config-delay_s", "0.2")
    page.fill("#id_config-echo", "<b>from the browser</b>")
    page.click("button[type=submit]")
    page.wait_for_selector("#job-state.state-succeeded", timeout=30_000)
    job = Job.objects.get()
    assert page.url == f"{live_server.url}/jobs/{job.pk}/"
    # pytest-django's live server speaks no WebSocket: the page said so and fell back to polling.
    assert page.locator("#job-live").inner_text() in ("", "polling")
    assert page.locator("#job-percent").inner_text() == "100%"
    # The echo comes back as text, never as markup.
    assert "&lt;b&gt;from the browser&lt;/b&gt;" in page.locator("#job-result").inner_html()
    page.wait_for_function("document.querySelectorAll('#job-metrics .metric-plot .scatterlayer .trace').length === 1")


def test_a_bad_value_is_shown_next_to_its_field(page, live_server, personas, browser_login):
    browser_login(personas["operator"])
    page.goto(live_server.url + "/jobs/new/?kind=selftest")
    page.fill("#id_config-steps", "5000")
    page.click("button[type=submit]")
    assert "less than or equal to 1000" in page.locator(".has-error [role=alert]").inner_text()
    assert not Job.objects.exists()
