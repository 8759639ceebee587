"""Research-Factory pages in Chromium: the score histogram draws under the CSP; a bad candidate
list shows its bad lines."""

from __future__ import annotations

import pytest

from apps.datasets.services import create_dataset
from apps.papers.models import Paper, PaperCandidate
from apps.trajectories.models import Trajectory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_dataset_page_draws_its_score_histogram_and_a_bad_list_names_its_lines(
        page, live_server, personas, browser_login):
    paper = Paper.objects.create(slug="p", title="P")
    runs = [Trajectory.objects.create(paper=paper, title=f"run {s}", final_score=s) for s in (0.95, 0.91, 0.2)]
    dataset = create_dataset("kept", [t.pk for t in runs])
    browser_login(personas["curator"])
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/")
    page.wait_for_function("document.querySelectorAll('[data-score-histogram] .barlayer .point').length === 10")
    heights = page.evaluate("document.querySelector('[data-score-histogram]').data[0].y")
    assert heights == [0, 0, 1, 0, 0, 0, 0, 0, 0, 2]
    page.goto(f"{live_server.url}/papers/candidates/import/")
    page.fill("#id_text", "2602.17547\n<script>alert(1)</script>\n")
    page.select_option("#id_format", "arxiv")
    page.click("#candidate-import-form button[type=submit]")
    row = page.locator("#candidate-import-errors tbody tr")
    assert row.count() == 1 and row.locator("td").first.inner_text() == "2"
    assert "'<script>alert(1)</script>' is not an arXiv id" in row.inner_text()
    assert not PaperCandidate.objects.exists()
