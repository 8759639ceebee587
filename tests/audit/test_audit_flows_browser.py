"""Issue 21, the audit flows as a new user meets them, in Debian's Chromium: the agreement table
follows grading, notes keep their lines, queues show their leaves, skip and undo, the report and
the what-if say what their numbers mean, run lists count grades."""

from __future__ import annotations

import pytest

from apps.audit.services.grading import grade_leaf
from apps.audit.services.judge_eval_import import import_judge_eval
from apps.audit.services.queues import create_queue
from apps.judging.models import JudgeRun, LeafGrade
from apps.papers.services import import_paper, read_rubric_file
from apps.rubrics.paperbench import flatten
from tests.audit.helpers import leaf_indexes, make_run
from tests.audit.test_audit_browser import _current_index, _open, _runs
from tests.judging.helpers import make_paper_with_rubric
from tests.rubrics.helpers import SAMPLES

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _column(page, table: str, header: str):
    """The cells under ``header`` in ``table``'s body rows."""
    headers = [h.strip() for h in page.locator(f"{table} thead th").all_text_contents()]
    return page.locator(f"{table} tbody tr td:nth-child({headers.index(header) + 1})")


def _wait_my_score(page, index: int, score: str) -> None:
    """Wait until the page shows the user's saved grade of leaf ``index``."""
    page.wait_for_function(f"document.querySelector(\"tr[data-index='{index}'] [data-testid=my-cell] "
                           f"[data-role=score]\")?.textContent === '{score}'")


def _my_metrics_row(page):
    return page.get_by_test_id("pair-metrics").locator("tbody tr", has_text="you (curator)")


def test_the_agreement_table_follows_each_grade_without_a_reload(page, live_server, personas, browser_login):
    big, cheap, leaves = _runs()
    _open(page, live_server, browser_login, personas["curator"], big, cheap)
    assert _my_metrics_row(page).locator("td").nth(1).inner_text() == "0"
    page.keyboard.press("j")
    for score in ("1", "1", "0"):  # the third leaf is where the cheap judge says 0
        page.keyboard.press(score)
        page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#pair-metrics tbody tr:last-child td:nth-child(2)')"
                           "?.textContent === '3'", timeout=5000)
    # Against big-judge (all 1): 3 leaves, 1 disagreement.
    assert _my_metrics_row(page).locator("td").nth(2).inner_text() == "1"


def test_a_note_opened_with_n_starts_on_its_own_line_after_the_one_there(page, live_server, personas, browser_login):
    big, cheap, leaves = _runs()
    grade_leaf(base=big, node_index=leaves[0], score=1, note="Loader found in data.py", user=personas["curator"])
    _open(page, live_server, browser_login, personas["curator"], big, cheap)
    page.keyboard.press("j")
    page.keyboard.press("n")
    page.keyboard.type("Normalisation checked in train.py")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector(\"[data-testid=my-cell] [data-role=note]\")?.title"
                           ".includes('train.py')")
    grade = LeafGrade.objects.get(run__graded_by=personas["curator"], node_index=leaves[0])
    assert grade.explanation == "Loader found in data.py\nNormalisation checked in train.py"
    # The judge's explanation is untouched.
    assert LeafGrade.objects.get(run=big, node_index=leaves[0]).explanation == "big-judge says 1.0"


def test_skip_moves_on_without_a_grade_and_undo_takes_back_the_last_save(page, live_server, personas, browser_login):
    big, cheap, leaves = _runs()
    _open(page, live_server, browser_login, personas["curator"], big, cheap)
    page.keyboard.press("j")
    page.keyboard.press("1")
    page.keyboard.press("Enter")  # saves the first leaf, on to the second
    _wait_my_score(page, leaves[0], "1")
    page.keyboard.press("s")  # the second stays without a grade
    assert _current_index(page) == leaves[2]
    assert "Skipped" in page.get_by_test_id("grade-status").inner_text()
    page.keyboard.press("u")
    page.wait_for_function("document.getElementById('grade-status').textContent.startsWith('Undone')")
    assert _current_index(page) == leaves[0]
    assert page.locator(f"tr[data-index='{leaves[0]}'] [data-testid=my-cell] [data-role=score]").inner_text() == "—"
    assert not LeafGrade.objects.filter(run__graded_by=personas["curator"]).exists()


def test_the_queue_page_shows_each_leaf_with_its_text_and_a_link_to_grade_it(page, live_server, personas,
                                                                            browser_login):
    # Real data: a PaperBench rubric and its human-graded JudgeEval tree, and a judge that differs on 3 leaves.
    curator = personas["curator"]
    paper = import_paper(read_rubric_file(SAMPLES / "rubrics" / "semantic-self-consistency.rubric.json")).paper
    path = SAMPLES / "judge_eval" / "semantic-self-consistency.judge_eval.json"
    human = import_judge_eval(paper=paper, data=path.read_bytes(), filename=path.name, user=curator).run
    scores = dict(human.grades.values_list("node_index", "score"))
    flipped = sorted(scores)[5:8]
    judge = make_run(human.rubric_version, "judge", {i: (1 - s if i in flipped else s) for i, s in scores.items()},
                     submission=human.submission)
    queue = create_queue(run_ids=[judge.pk, human.pk], assignees=[curator], user=curator)
    browser_login(curator)
    page.goto(f"{live_server.url}/audit/queues/{queue.pk}/")
    first = queue.items.order_by("node_index").first()
    requirement = flatten(human.rubric_version.tree)[first.node_index].requirements
    assert requirement[:60] in page.get_by_test_id("queue-items").inner_text()
    items = page.get_by_test_id("queue-item")
    assert items.count() == 3 and requirement[:60] in items.first.inner_text()
    items.first.locator("a").click()
    page.wait_for_selector("[data-testid=audit-grid][data-ready='1']")
    assert _current_index(page) == first.node_index
    assert requirement[:40] in page.get_by_test_id("current-leaf").inner_text()


def test_the_judge_report_cannot_judge_from_three_submissions(page, live_server, personas, browser_login):
    paper, version = make_paper_with_rubric("three-submissions")
    leaves = leaf_indexes(version)
    for k in range(3):
        scores = {i: float(j <= k) for j, i in enumerate(leaves)}
        make_run(version, "big-judge", scores, submission=f"submissions/{k}")
        make_run(version, "cheap-judge", scores, submission=f"submissions/{k}")
    browser_login(personas["viewer"])
    page.goto(f"{live_server.url}/audit/report/?reference=big-judge&candidate=cheap-judge&n_resamples=200")
    assert page.get_by_test_id("verdict").inner_text() == "too few"
    assert "needs at least 10" in page.get_by_test_id("verdict-reason").inner_text()
    assert "[1.000, 1.000]" not in page.locator(".counts").inner_text()


def test_what_if_counts_the_leaves_a_run_leaves_without_a_grade(page, live_server, personas, browser_login):
    paper = import_paper(read_rubric_file(SAMPLES / "rubrics" / "stochastic-interpolants.rubric.json")).paper
    version = paper.rubric_versions.get()
    graded = leaf_indexes(version)[:2]
    make_run(version, "judge", {i: 1.0 for i in graded}, submission="submissions/a")
    browser_login(personas["viewer"])
    page.goto(f"{live_server.url}/audit/what-if/?paper={paper.slug}&version=1")
    cell = _column(page, "[data-testid=what-if-table]", "Leaves without a grade")
    assert cell.inner_text() == f"{version.leaf_count - 2} of {version.leaf_count}"


def test_the_judge_run_list_counts_the_grades_each_run_has(page, live_server, personas, browser_login):
    paper, version = make_paper_with_rubric("counted")
    leaves = leaf_indexes(version)
    run = make_run(version, "o3-mini-high", {i: 1.0 for i in leaves})  # stored without a leaf count
    assert JudgeRun.objects.get(pk=run.pk).n_leaves == 0
    browser_login(personas["viewer"])
    page.goto(f"{live_server.url}/judging/")
    assert _column(page, "table.list", "Leaves").first.inner_text() == str(len(leaves))
