"""Issue 21, the rubric editor's flows as a new user meets them, in Debian's Chromium: restore
without losing draft edits, typing right after adding a node, quick keys in one tab, categories
that follow leafhood, problems that link to their nodes, bulk category edits."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from apps.papers.services import import_paper, read_rubric_file
from apps.rubrics.models import RubricNode
from apps.rubrics.services.editor import draft_problems
from apps.rubrics.services.edits import update_node
from apps.rubrics.services.store import export_draft, load_draft
from tests.rubrics.helpers import SAMPLES, make_paper, pk_of
from tests.rubrics.test_editor_browser import _ids, _open, _press, _row, _wait_saved

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _real_paper(name: str = "stochastic-interpolants"):
    """A real PaperBench rubric (read in place), imported as its version 1."""
    return import_paper(read_rubric_file(SAMPLES / "rubrics" / f"{name}.rubric.json")).paper


def _leaves(paper) -> list[RubricNode]:
    draft = load_draft(paper)
    parents = {n.parent for n in draft.nodes}
    return [RubricNode.objects.get(pk=draft.pks[n.index]) for n in draft.nodes if n.index not in parents]


def _eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait for the page's queued requests to land in the database."""
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, "the page's edits did not arrive"
        time.sleep(0.05)


def _status(page) -> str:
    return page.locator("#rx-status").inner_text()


# --- 1. Restore asks before it replaces draft edits; the open editor says what happened ----------


def test_restore_asks_first_and_can_keep_the_drafts_edits_as_a_version(page, live_server, personas, browser_login):
    paper = _real_paper("semantic-self-consistency")
    edited = _leaves(paper)[3]
    update_node(paper, edited.pk, edited.version, {"requirements": "Reworded by a curator, not saved as a version"})
    browser_login(personas["curator"])
    page.goto(f"{live_server.url}/rubrics/{paper.slug}/versions/")
    page.locator("#version-list").get_by_text("Restore").click()
    confirm = page.get_by_test_id("restore-confirm")
    confirm.wait_for(timeout=3000)
    assert "1 change" in confirm.inner_text()
    assert paper.rubric_versions.count() == 1  # nothing happened yet
    page.get_by_test_id("restore-keep").click()
    page.wait_for_selector("ul.messages", timeout=5000)
    kept, restored = paper.rubric_versions.get(number=2), paper.rubric_versions.get(number=3)
    assert kept.message == "Draft kept before restoring version 1"
    assert "Reworded by a curator, not saved as a version" in kept.tree_json
    assert restored.message == "Restored version 1"
    assert restored.content_hash == paper.rubric_versions.get(number=1).content_hash
    assert "Kept the draft's edits as version 2" in page.content()


def test_an_editor_open_on_a_replaced_draft_says_so_and_keeps_the_unsaved_text(page, live_server, personas,
                                                                                browser_login, client_for):
    paper = make_paper()
    update_node(paper, pk_of(paper, "b"), 1, {"weight": 5})
    _open(page, live_server, browser_login, personas["curator"], paper)
    # Another tab restores version 1, keeping the draft's edits as version 2.
    client_for("curator").post(f"/api/papers/{paper.pk}/versions/1/restore/", {"draft": "keep"},
                               content_type="application/json")
    _row(page, "Leaf b is done").click()
    page.keyboard.press("Enter")
    page.locator(".rx-inline").fill("Typed after the restore")
    page.keyboard.press("Enter")
    page.wait_for_selector("#rx-replaced", state="visible", timeout=5000)
    assert page.locator("#rx-replaced-text").input_value() == "Typed after the restore"
    assert "draft was replaced" in _status(page)


# --- 2. Typing right after Add child goes into the new node -------------------------------------


def test_typing_right_after_add_child_goes_into_the_new_node(page, live_server, personas, browser_login):
    paper = make_paper()
    _open(page, live_server, browser_login, personas["curator"], paper)
    _row(page, "Node c is reproduced").click()
    page.keyboard.press("a")
    page.keyboard.type("Results are saved ")  # before the new node's editor is open
    page.wait_for_selector(".rx-inline")
    page.wait_for_timeout(700)  # past the problems refresh that follows every write
    page.keyboard.type("as a dashboard")
    page.keyboard.press("Enter")
    page.wait_for_selector(".rx-req:has-text('Results are saved as a dashboard')")
    _wait_saved(page)
    assert RubricNode.objects.filter(paper=paper).count() == 8
    assert list(RubricNode.objects.get(paper=paper, node_id="c").children.order_by("position")
                .values_list("requirements", flat=True)) == ["Leaf c1 is done", "Results are saved as a dashboard"]


# --- 4. One tab never gets "someone else changed this node" from its own keys --------------------


def test_quick_keys_in_one_tab_never_conflict_with_each_other(page, live_server, personas, browser_login):
    paper = make_paper()
    _open(page, live_server, browser_login, personas["curator"], paper)
    _row(page, "Node c is reproduced").click()
    _press(page, "a", "Added; type the requirements")
    page.keyboard.press("Escape")
    # Duplicate the new child, go to its parent c, and move c up twice: as fast as one types.
    for key in ("d", "ArrowLeft", "Alt+ArrowUp", "Alt+ArrowUp"):
        page.keyboard.press(key)
    _eventually(lambda: _ids(paper, "root") == ["c", "a", "b"])
    page.wait_for_function("document.getElementById('rx-status').textContent === 'Moved'")
    assert len(_ids(paper, "c")) == 3
    assert "someone else" not in _status(page)


# --- 5. Categories follow leafhood; problems link to their nodes ---------------------------------


def test_deleting_an_added_child_gives_its_parent_the_category_back(page, live_server, personas, browser_login):
    paper = make_paper()
    _open(page, live_server, browser_login, personas["curator"], paper)
    _row(page, "Leaf b is done").click()
    page.keyboard.press("a")
    page.locator(".rx-inline").fill("Sub-check of b")
    page.keyboard.press("Enter")
    _wait_saved(page)
    _row(page, "Sub-check of b").click()
    page.evaluate("document.getElementById('rx-status').textContent = ''")
    page.keyboard.press("Delete")
    page.wait_for_function("document.getElementById('rx-status').textContent.startsWith('Deleted 1 node')")
    b = RubricNode.objects.get(paper=paper, node_id="b")
    assert (b.task_category, b.children.count()) == ("Result Analysis", 0)
    assert draft_problems(load_draft(paper)) == []
    # One undo step puts the child back with the category, and b without one again.
    _press(page, "Control+z", "Undone")
    b.refresh_from_db()
    assert b.task_category is None and b.children.get().task_category == "Result Analysis"


def test_the_problems_badge_lists_every_problem_with_a_link_to_its_node(page, live_server, personas, browser_login):
    paper = _real_paper()
    empty, uncategorised = _leaves(paper)[10], _leaves(paper)[40]
    update_node(paper, empty.pk, empty.version, {"requirements": ""})
    update_node(paper, uncategorised.pk, uncategorised.version, {"task_category": None})
    _open(page, live_server, browser_login, personas["curator"], paper)
    page.click("#rx-problems-toggle")
    links = page.locator("#rx-problem-list button")
    assert links.count() == 2
    assert "requirements are empty" in page.locator("#rx-problem-list").inner_text()
    links.first.click()
    # The node is revealed in the collapsed tree, selected, and shown in the panel.
    page.wait_for_selector(f"#rx-node-{empty.pk} > .rx-row.selected")
    assert page.locator("#rx-field-requirements").input_value() == ""
    # `e` goes on to the next problem.
    page.keyboard.press("e")
    page.wait_for_selector(f"#rx-node-{uncategorised.pk} > .rx-row.selected")


def test_save_version_lists_the_problems_each_with_a_link_to_its_node(page, live_server, personas, browser_login):
    paper = _real_paper()
    empty = _leaves(paper)[5]
    update_node(paper, empty.pk, empty.version, {"requirements": "   "})
    _open(page, live_server, browser_login, personas["curator"], paper)
    page.click("#rx-save-version")
    page.fill("#rx-version-message", "try")
    page.click("#rx-version-form button[value=save]")
    page.wait_for_function("document.getElementById('rx-status').textContent.startsWith('Not saved: 1 error')")
    assert page.locator("#rx-problems").is_visible()
    # The versions page lists it too; its link opens the editor on that node.
    page.goto(f"{live_server.url}/rubrics/{paper.slug}/versions/")
    page.fill("#version-message", "try again")
    page.click("#save-version-form button[type=submit]")
    assert "Not saved" in page.locator("body").inner_text()
    link = page.get_by_test_id("problem-link")
    assert link.count() == 1 and "requirements are empty" in page.get_by_test_id("draft-problems").inner_text()
    link.click()
    page.wait_for_selector("#rubric-editor[data-ready='1']")
    page.wait_for_selector(f"#rx-node-{empty.pk} > .rx-row.selected")
    assert paper.rubric_versions.count() == 1


# --- Beyond the peers: bulk category edits ------------------------------------------------------


def test_an_inner_node_sets_the_category_of_every_leaf_below_in_one_undo_step(page, live_server, personas,
                                                                             browser_login):
    paper = make_paper()
    before = export_draft(paper)
    _open(page, live_server, browser_login, personas["curator"], paper)
    _row(page, "Node a is reproduced").click()
    page.select_option("#rx-bulk-category", "Result Analysis")
    page.select_option("#rx-bulk-finegrained", "Method Implementation")
    page.click("#rx-bulk-apply")
    page.wait_for_function("document.getElementById('rx-status').textContent.startsWith('Set the category of 2 leaves')")
    assert {(n.task_category, n.finegrained_task_category) for n in RubricNode.objects.filter(
        paper=paper, node_id__in=["a1", "a2"])} == {("Result Analysis", "Method Implementation")}
    page.locator("#rx-tree").focus()
    _press(page, "Control+z", "Undone")
    assert export_draft(paper) == before
