"""The user flows end to end in Debian's Chromium: as a curator and an operator would use them.

One test per flow, each a chain of steps on one logged-in page; a failure leaves a screenshot
and the page's HTML in test-artifacts/ (see conftest.py).
"""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from apps.jobs.models import Job
from apps.papers.models import Paper
from apps.rubrics.models import RubricNode
from tests.factories import PASSWORD
from tests.rubrics.helpers import small_tree

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _login(page, base: str, user) -> None:
    page.goto(base + "/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def _paper_folder_zip() -> bytes:
    """A PaperBench paper folder, zipped as a curator would upload it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("flow-paper/rubric.json", json.dumps(small_tree()))
        archive.writestr("flow-paper/config.yaml", "id: flow-paper\ntitle: A flow paper\n")
        archive.writestr("flow-paper/paper.md", "# A flow paper\n\nWe reproduce *everything*.\n")
        archive.writestr("flow-paper/blacklist.txt", "none\n")
    return buffer.getvalue()


def _status(page, key: str, status: str) -> None:
    """Press ``key`` in the editor and wait for the status line that action reports."""
    page.evaluate("() => { document.getElementById('rx-status').textContent = ''; }")
    page.keyboard.press(key)
    _wait_status(page, status)


def _wait_status(page, status: str) -> None:
    page.wait_for_function("(s) => document.getElementById('rx-status').textContent === s", arg=status)


def _row(page, text: str):
    return page.locator(".rx-row", has=page.locator(".rx-req", has_text=text)).first


def _children(paper: Paper, node_id: str) -> list[str]:
    parent = RubricNode.objects.get(paper=paper, node_id=node_id)
    return list(parent.children.order_by("position").values_list("node_id", flat=True))


def test_flow_curate_a_rubric(strict_page, live_server, personas):
    page = strict_page
    base = live_server.url
    _login(page, base, personas["curator"])

    # Import a PaperBench paper folder (zipped) through the import page.
    page.goto(base + "/papers/import/")
    page.set_input_files("#id_file", {"name": "flow-paper.zip", "mimeType": "application/zip",
                                      "buffer": _paper_folder_zip()})
    page.click("#import-form button[type=submit]")
    page.wait_for_url(base + "/papers/flow-paper/")
    paper = Paper.objects.get(slug="flow-paper")
    assert paper.rubric_versions.count() == 1

    # Edit requirements and a weight with the keyboard only.
    page.goto(f"{base}/rubrics/{paper.slug}/edit/")
    page.wait_for_selector("#rubric-editor[data-ready='1']")
    _row(page, "Leaf b is done").click()
    page.keyboard.press("Enter")
    page.keyboard.press("Control+a")
    page.keyboard.type("Leaf b reports the table")
    page.keyboard.press("Enter")
    page.wait_for_selector(".rx-req:has-text('Leaf b reports the table')")
    _wait_status(page, "Saved")
    page.focus("#rx-field-weight")
    page.keyboard.press("Control+a")
    page.keyboard.type("3")
    page.keyboard.press("Tab")  # leaving the field commits it
    _wait_status(page, "Saved")
    b = RubricNode.objects.get(paper=paper, node_id="b")
    assert (b.requirements, b.weight) == ("Leaf b reports the table", 3)

    # Move subtree a into c with cut and paste, undo it, then move c's leaf under a for good.
    _row(page, "Node a is reproduced").click()
    page.keyboard.press("x")
    _row(page, "Node c is reproduced").click()
    _status(page, "v", "Moved")
    assert _children(paper, "c") == ["c1", "a"]
    _status(page, "Control+z", "Undone")
    assert _children(paper, "root") == ["a", "b", "c"]
    _row(page, "Node c is reproduced").click()
    page.keyboard.press("x")
    _row(page, "Node a is reproduced").click()
    _status(page, "v", "Moved")
    assert _children(paper, "a") == ["a1", "a2", "c"]

    # Save a version, then diff it with the previous one on the versions page.
    page.click("#rx-save-version")
    page.fill("#rx-version-message", "b reworded, c under a")
    page.click("#rx-version-form button[value=save]")
    _wait_status(page, "Saved version 2")
    page.goto(f"{base}/rubrics/{paper.slug}/versions/")
    page.select_option("#diff-form select[name=a]", "1")
    page.select_option("#diff-form select[name=b]", "2")
    page.click("#diff-form button[type=submit]")
    diff = page.locator("#diff")
    assert "Leaf b reports the table" in " ".join(diff.locator(".diff-changed").all_inner_texts())
    assert diff.locator(".diff-moved").count() == 1
    assert "b reworded, c under a" in page.locator("#version-list").inner_text()
    assert page.csp_violations == []


def _number(page, selector: str) -> float:
    return float(page.eval_on_selector(selector, "el => el.value"))


# Points drawn in the metrics chart (plotly keeps its traces on the element).
# Points drawn in the job's metric panels (one plot per metric).
POINTS = ("[...document.querySelectorAll('#job-metrics .metric-plot')]"
          ".reduce((n, plot) => n + (plot.data || []).reduce((m, t) => m + t.x.length, 0), 0)")


def test_flow_launch_watch_cancel_and_relaunch_a_job(daphne_url, strict_page, personas, celery_worker):
    # daphne first: torn down last, after the page has closed its WebSocket (else it waits for it).
    page = strict_page
    base = daphne_url
    _login(page, base, personas["operator"])
    page.goto(base + "/jobs/new/?kind=selftest")
    page.fill("#id_config-steps", "60")
    page.fill("#id_config-delay_s", "0.15")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/jobs/*/")
    job = Job.objects.get()

    # Live over the WebSocket: the bar and the chart move while the job runs.
    page.wait_for_function("() => document.getElementById('job-live').textContent === 'live'")
    page.wait_for_function("() => document.getElementById('job-progress').value > 0")
    page.wait_for_function(f"() => {POINTS} > 0")
    progress, points = _number(page, "#job-progress"), page.evaluate(f"() => {POINTS}")
    page.wait_for_function("(p) => document.getElementById('job-progress').value > p", arg=progress)
    page.wait_for_function(f"(n) => {POINTS} > n", arg=points)

    # Cancel stops it part-way.
    page.click("#job-cancel button")
    page.wait_for_selector("#job-state.state-cancelled", timeout=30_000)
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED and 0 < job.step < 60

    # Launch again with changes: the form comes pre-filled from the cancelled job.
    page.click("text=Launch again with changes")
    assert page.input_value("#id_config-steps") == "60"
    page.fill("#id_config-steps", "4")
    page.fill("#id_config-delay_s", "0")
    page.fill("#id_config-echo", "second try")
    page.click("button[type=submit]")
    page.wait_for_selector("#job-state.state-succeeded", timeout=30_000)
    relaunched = Job.objects.exclude(pk=job.pk).get()
    assert relaunched.config["steps"] == 4 and relaunched.result["echo"] == "second try"
    assert page.locator("#job-percent").inner_text() == "100%"
    assert page.csp_violations == []


def test_flow_audit_judge_scores_side_by_side(strict_page, live_server, personas):
    """Two judge runs and a human grading of one submission: filter, grade by keyboard, watch the figures."""
    from tests.audit.helpers import leaf_indexes, make_run
    from tests.judging.helpers import make_paper_with_rubric

    page = strict_page
    _paper, version = make_paper_with_rubric("audit-flow")
    leaves = leaf_indexes(version)
    human = make_run(version, "admin", {i: 1.0 for i in leaves}, kind="human", submission="submissions/a",
                     graded_by=personas["admin"])
    big = make_run(version, "big-judge", {**{i: 1.0 for i in leaves}, leaves[1]: 0.0}, submission="submissions/a")
    cheap = make_run(version, "cheap-judge", {**{i: 1.0 for i in leaves}, leaves[3]: 0.0}, submission="submissions/a")
    base = live_server.url
    _login(page, base, personas["curator"])
    url = f"{base}/audit/compare/?runs={human.pk},{big.pk},{cheap.pk}"
    page.goto(url)
    page.wait_for_selector("[data-testid=audit-grid][data-ready='1']")
    figures_before = page.get_by_test_id("pair-metrics").inner_text()

    # Only the leaves where the sources disagree.
    page.get_by_test_id("filter-disagree").check()
    visible = page.locator("tr[data-testid=audit-row][data-leaf='1']:visible")
    assert sorted(int(i) for i in visible.evaluate_all("rows => rows.map(r => r.dataset.index)")) == [leaves[1], leaves[3]]

    # Grade both with the keyboard: j to the first, 0 and Enter (save and next), 1 and Enter.
    page.keyboard.press("j")
    page.keyboard.press("0")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('mine-graded')?.textContent === '1'")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('mine-graded')?.textContent === '2'")
    from apps.judging.models import JudgeRun

    mine = JudgeRun.objects.get(kind="human", graded_by=personas["curator"])
    assert dict(mine.grades.values_list("node_index", "score")) == {leaves[1]: 0.0, leaves[3]: 1.0}
    assert page.locator("#mine-root").inner_text() == f"{mine.score:.3f}"

    # The agreement figures now count the new grades.
    page.goto(url)
    page.wait_for_selector("[data-testid=audit-grid][data-ready='1']")
    figures_after = page.get_by_test_id("pair-metrics").inner_text()
    assert figures_after != figures_before and "curator" in figures_after
    assert page.csp_violations == []
