"""Keyboard-first human grading and the report plots in Debian's Chromium."""

from __future__ import annotations

import pytest

from apps.judging.models import JudgeRun, LeafGrade
from tests.audit.helpers import leaf_indexes, make_run
from tests.judging.helpers import make_paper_with_rubric

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _runs():
    paper, version = make_paper_with_rubric("browser-audit")
    leaves = leaf_indexes(version)
    big = make_run(version, "big-judge", {i: 1.0 for i in leaves}, submission="submissions/a", cost=2.0)
    cheap = make_run(version, "cheap-judge", {**{i: 1.0 for i in leaves}, leaves[2]: 0.0}, submission="submissions/a")
    return big, cheap, leaves


def _open(page, live_server, browser_login, user, big, cheap):
    browser_login(user)
    page.goto(f"{live_server.url}/audit/compare/?runs={big.pk},{cheap.pk}")
    page.wait_for_selector("[data-testid=audit-grid][data-ready='1']")


def _current_index(page) -> int:
    return int(page.locator("tr[data-testid=audit-row].current").get_attribute("data-index"))


def _wait_status(page, start: str) -> None:
    """Saves finish in the background (the page moves on at once): wait for this one's answer."""
    page.wait_for_function(f"document.getElementById('grade-status').textContent.startsWith({start!r})")


def test_keyboard_grading_saves_own_grades_and_moves_on(page, live_server, personas, browser_login):
    big, cheap, leaves = _runs()
    _open(page, live_server, browser_login, personas["curator"], big, cheap)
    page.keyboard.press("j")
    assert _current_index(page) == leaves[0]
    page.keyboard.press("1")
    assert page.get_by_test_id("pending-score").inner_text() == "1"
    page.keyboard.press("n")
    page.keyboard.type("Loader found in data.py")
    page.keyboard.press("Enter")  # in the note: save and go to the next leaf
    page.wait_for_function(f"document.querySelector('tr.current')?.dataset.index === '{leaves[1]}'")
    _wait_status(page, "Saved 1.1: 1")
    first = page.locator(f"tr[data-index='{leaves[0]}'] [data-testid=my-cell]")
    assert first.locator("[data-role=score]").inner_text() == "1"
    assert "curator" in first.locator("[data-role=who]").inner_text()
    grade = LeafGrade.objects.get(run__kind="human", run__graded_by=personas["curator"], node_index=leaves[0])
    assert (grade.score, grade.explanation, grade.graded_by_id) == (1.0, "Loader found in data.py", personas["curator"].pk)
    # Arrows move too; 0 then Enter (outside the note) saves and moves on.
    page.keyboard.press("ArrowDown")
    page.keyboard.press("k")
    assert _current_index(page) == leaves[1]
    page.keyboard.press("0")
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.querySelector('tr.current')?.dataset.index === '{leaves[2]}'")
    _wait_status(page, "Saved 1.2: 0")
    assert page.locator(f"tr[data-index='{leaves[1]}'] [data-testid=my-cell] [data-role=score]").inner_text() == "0"
    human = JudgeRun.objects.get(kind="human", graded_by=personas["curator"])
    assert dict(human.grades.values_list("node_index", "score")) == {leaves[0]: 1.0, leaves[1]: 0.0}
    assert page.get_by_test_id("root-2").inner_text() == f"{human.score:.3f}"
    # Enter with no score chosen on an ungraded leaf saves nothing.
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('grade-status').textContent === 'Press 0 or 1 first.'")
    assert human.grades.count() == 2
    # The judges' own grades are untouched.
    assert LeafGrade.objects.get(run=cheap, node_index=leaves[2]).score == 0.0
    # Filters: only disagreements leaves the one leaf the judges (and the human) disagree on.
    page.get_by_test_id("filter-disagree").check()
    visible = page.locator("tr[data-testid=audit-row][data-leaf='1']:visible")
    assert visible.count() == 1 and visible.get_attribute("data-index") == str(leaves[2])


def test_a_viewer_can_browse_and_read_the_report_but_not_grade(page, live_server, personas, browser_login):
    big, cheap, leaves = _runs()
    _open(page, live_server, browser_login, personas["viewer"], big, cheap)
    assert page.get_by_test_id("grade-bar").count() == 0
    page.keyboard.press("j")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    assert _current_index(page) == leaves[0]
    assert not JudgeRun.objects.filter(kind="human").exists()
    # The judge's prompt and answer load a click away.
    page.locator(f"tr[data-index='{leaves[2]}'] [data-testid=show-prompt]").nth(1).click()
    page.wait_for_function("document.getElementById('leaf-panel-body').textContent.includes('Grade leaf')")
    # The judge comparison report draws its four plots (plotly from our static files).
    page.goto(f"{live_server.url}/audit/report/?reference=big-judge&candidate=cheap-judge&n_resamples=50")
    for name in ("plot-scatter", "plot-categories", "plot-heatmap", "plot-cost"):
        page.wait_for_selector(f"[data-testid={name}] .main-svg")
    # One submission graded by both: too few to judge.
    assert page.get_by_test_id("verdict").inner_text() == "too few"
