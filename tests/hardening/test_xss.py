"""Untrusted text (agent and model output, paper Markdown, rubric text, names) renders as text.

A world whose every free-text field holds a list of standard XSS payloads; every page must show
them escaped, and in a real browser (with the CSP switched off, so escaping alone is tested) no
payload may run, including in the plots and the window inspector.
"""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from apps.core.roles import ROLES
from tests.factories import PASSWORD
from tests.hardening.test_access_matrix import EXPECTED, _params, url_names
from tests.hardening.world import build_world

# After the OWASP XSS filter evasion cheat sheet: tags, attributes, URLs, template and JSON breaks.
PAYLOADS = [
    "<script>alert('x1')</script>",
    '"><img src=x onerror=alert("x2")>',
    "<svg/onload=alert('x3')>",
    "</script><script>alert('x4')</script>",
    "'-alert('x5')-'",
    '<a href="javascript:alert(\'x6\')">x6</a>',
    "<iframe srcdoc='<script>alert(7)</script>'></iframe>",
    "{{7*7}}<b onmouseover=alert('x8')>x8</b>",
]
TEXT = " ".join(PAYLOADS)
READERS = set(ROLES["viewer"]) | {"edit_papers", "launch_jobs"}


def _html_pages(world) -> list[str]:
    names = url_names()
    pages = [reverse(name, kwargs=_params(name, names[name], world)) for name, spec in EXPECTED.items()
             if ":" in name and name in names and spec[0] in READERS and not name.endswith("-export")]
    # The window inspector is a fragment the split page loads; and the rubric leaf's grade.
    return [*pages, f"/trajectories/{world.trajectory.pk}/split/window/1/?l_max=200",
            f"/audit/compare/?runs={world.judge_run.pk}"]


@pytest.mark.django_db
def test_every_page_shows_the_payloads_as_text(client_for, personas):
    world = build_world(TEXT, personas["admin"])
    client = client_for("admin")
    raw = {}
    for path in _html_pages(world):
        response = client.get(path)
        if response.status_code != 200 or not response["Content-Type"].startswith("text/html"):
            continue
        html = response.content.decode()
        scripts = " ".join(re.findall(r"<script(?![^>]*application/json)[^>]*>(.*?)</script>", html, re.S))
        # A tag payload must never appear raw; a quote-breaking one matters inside executable scripts.
        found = [p for p in PAYLOADS if (p in html and "<" in p) or p in scripts]
        found += ["javascript: link"] if 'href="javascript:' in html else []
        if found:
            raw[path] = found
    assert raw == {}


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_no_payload_runs_in_the_browser_including_plots_and_the_inspector(page, live_server, personas):
    world = build_world(TEXT, personas["admin"])
    ran = []
    page.on("dialog", lambda dialog: (ran.append(f"{page.url}: {dialog.message}"), dialog.dismiss()))
    page.goto(live_server.url + "/login/")
    page.fill("#id_username", personas["viewer"].username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(live_server.url + "/")
    base = live_server.url
    visits = [
        (f"/trajectories/{world.trajectory.pk}/", ".turn"),
        (f"/trajectories/{world.trajectory.pk}/split/?l_max=200", "#window-plot .main-svg"),
        (f"/jobs/{world.job.pk}/", "#job-metrics .main-svg"),
        (f"/judging/runs/{world.judge_run.pk}/", "table"),
        (f"/papers/{world.paper.slug}/", "h1"),
        (f"/rubrics/{world.paper.slug}/edit/", "#rubric-editor[data-ready='1']"),
        (f"/audit/compare/?runs={world.judge_run.pk}", "main"),
    ]
    for path, ready in visits:
        page.goto(base + path)
        page.wait_for_selector(ready)
        page.mouse.move(400, 400)
    # Hover text and the inspector: hover the split plot, then open a window's inspector.
    page.goto(f"{base}/trajectories/{world.trajectory.pk}/split/?l_max=200")
    page.wait_for_selector("#window-plot .main-svg")
    page.hover("#window-plot .nsewdrag")
    # Open window 1 in the inspector as a click on its bar does (htmx into #inspector).
    page.evaluate("(url) => htmx.ajax('GET', url, {target: '#inspector'})",
                  f"/trajectories/{world.trajectory.pk}/split/window/1/?l_max=200")
    page.wait_for_function("() => document.getElementById('inspector').textContent.includes(\"alert('x1')\")")
    page.goto(f"{base}/jobs/{world.job.pk}/")
    page.wait_for_selector("#job-metrics .main-svg")
    page.hover("#job-metrics .nsewdrag")
    # The payload reached the plot as a trace name (its hover label) and ran nowhere.
    assert "alert('x1')" in page.evaluate("() => document.querySelector('#job-metrics .metric-plot').data[0].name")
    assert "alert('x1')" in page.locator("#job-metrics figcaption").first.inner_text()  # the panel's title, as text
    assert ran == []
