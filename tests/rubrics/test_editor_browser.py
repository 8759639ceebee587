"""The rubric editor in Debian's Chromium: add, edit, move, undo, keyboard, conflicts."""

from __future__ import annotations

import json

import pytest

from apps.rubrics.models import RubricNode
from apps.rubrics.services.editor import draft_problems
from apps.rubrics.services.edits import update_node
from apps.rubrics.services.store import export_draft, load_draft
from tests.rubrics.helpers import SAMPLES, make_paper, pk_of

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _open(page, live_server, browser_login, user, paper):
    browser_login(user)
    page.goto(f"{live_server.url}/rubrics/{paper.slug}/edit/")
    page.wait_for_selector("#rubric-editor[data-ready='1']")
    return page


def _row(page, node_id_text: str):
    return page.locator(".rx-row", has=page.locator(".rx-req", has_text=node_id_text)).first


def _ids(paper, parent_node_id: str) -> list[str]:
    parent = RubricNode.objects.get(paper=paper, node_id=parent_node_id)
    return list(parent.children.order_by("position").values_list("node_id", flat=True))


def _press(page, key: str, status: str) -> None:
    """Press ``key`` and wait until the editor reports ``status`` for that very action."""
    page.evaluate("document.getElementById('rx-status').textContent = ''")
    page.keyboard.press(key)
    page.wait_for_function(f"document.getElementById('rx-status').textContent === {status!r}")


def _wait_saved(page):
    page.wait_for_function("document.getElementById('rx-status').textContent !== 'Saving…'")


def test_the_editor_shows_the_tree_with_effective_weights_and_category_counts(page, live_server, personas, browser_login):
    paper = make_paper()
    _open(page, live_server, browser_login, personas["viewer"], paper)
    assert "7 nodes · 4 leaves" in page.locator("#rx-stats").inner_text()
    page.locator(".rx-row", has_text="Node a is reproduced").locator(".rx-toggle").click()
    assert _row(page, "Leaf a2 is done").locator(".rx-share").inner_text() == "37.5%"
    # A viewer sees the editor read-only: no undo buttons, disabled fields.
    assert page.locator("#rx-undo").count() == 0
    assert page.locator("#rx-field-requirements").is_disabled()


def test_expanded_nodes_are_remembered_across_reloads(page, live_server, personas, browser_login):
    paper = make_paper()
    _open(page, live_server, browser_login, personas["viewer"], paper)
    assert page.locator(".rx-req", has_text="Leaf a1 is done").count() == 0  # lazy: not in the DOM
    page.locator(".rx-row", has_text="Node a is reproduced").locator(".rx-toggle").click()
    assert page.locator(".rx-req", has_text="Leaf a1 is done").count() == 1
    page.reload()
    page.wait_for_selector("#rubric-editor[data-ready='1']")
    assert page.locator(".rx-req", has_text="Leaf a1 is done").count() == 1


def test_enter_edits_the_requirements_inline_and_saves_one_node(page, live_server, personas, browser_login):
    paper = make_paper()
    _open(page, live_server, browser_login, personas["curator"], paper)
    _row(page, "Leaf b is done").click()
    page.keyboard.press("Enter")
    page.locator(".rx-inline").fill("Leaf b is reworded")
    page.keyboard.press("Enter")
    page.wait_for_selector(".rx-req:has-text('Leaf b is reworded')")
    _wait_saved(page)
    node = RubricNode.objects.get(paper=paper, node_id="b")
    assert node.requirements == "Leaf b is reworded" and node.version == 2


def test_the_panel_edits_weight_and_category_and_updates_effective_weights(page, live_server, personas, browser_login):
    paper = make_paper()
    _open(page, live_server, browser_login, personas["curator"], paper)
    _row(page, "Leaf b is done").click()
    page.fill("#rx-field-weight", "2")
    page.locator("#rx-field-weight").dispatch_event("change")
    page.wait_for_function("document.getElementById('rx-status').textContent === 'Saved'")
    page.select_option("#rx-field-category", "Code Execution")
    page.wait_for_selector(".rx-row.selected .cat-code-execution")
    node = RubricNode.objects.get(paper=paper, node_id="b")
    assert node.weight == 2 and node.task_category == "Code Execution"
    # Root children weigh 2, 2, 1 now: b holds 40% of the score.
    assert _row(page, "Leaf b is done").locator(".rx-share").inner_text() == "40.0%"


def test_effective_weights_after_an_edit_are_the_servers_including_others_changes(page, live_server, personas,
                                                                                    browser_login):
    paper = make_paper()
    _open(page, live_server, browser_login, personas["curator"], paper)
    update_node(paper, pk_of(paper, "c"), 1, {"weight": 3})  # someone else, unseen by this page
    _row(page, "Leaf b is done").click()
    page.fill("#rx-field-weight", "2")
    page.locator("#rx-field-weight").dispatch_event("change")
    page.wait_for_function("document.getElementById('rx-status').textContent === 'Saved'")
    # Root children weigh 2, 2, 3 on the server: b holds 2/7 of the score, c 3/7 (the page's own
    # weights, 2, 2, 1, would say 40% and 20%).
    assert _row(page, "Leaf b is done").locator(".rx-share").inner_text() == "28.6%"
    assert _row(page, "Node c is reproduced").locator(".rx-share").inner_text() == "42.9%"


def test_keyboard_adds_a_child_and_undo_and_redo_survive_a_reload(page, live_server, personas, browser_login):
    paper = make_paper()
    _open(page, live_server, browser_login, personas["curator"], paper)
    _row(page, "Node c is reproduced").click()
    page.keyboard.press("a")
    page.locator(".rx-inline").fill("A brand new check")
    page.keyboard.press("Enter")
    page.wait_for_selector(".rx-req:has-text('A brand new check')")
    _wait_saved(page)
    assert len(_ids(paper, "c")) == 2
    page.reload()
    page.wait_for_selector("#rubric-editor[data-ready='1']")
    page.locator("#rx-tree").click()
    _press(page, "Control+z", "Undone")  # undo the text edit
    _press(page, "Control+z", "Undone")  # undo the add
    assert _ids(paper, "c") == ["c1"]
    _press(page, "Control+Shift+z", "Redone")  # redo the add
    _press(page, "Control+Shift+z", "Redone")  # redo the text
    page.wait_for_selector(".rx-req:has-text('A brand new check')")
    assert RubricNode.objects.filter(paper=paper, requirements="A brand new check").count() == 1


def test_delete_then_undo_puts_the_exact_subtree_back(page, live_server, personas, browser_login):
    paper = make_paper()
    before = json.dumps(export_draft(paper))
    _open(page, live_server, browser_login, personas["curator"], paper)
    _row(page, "Node a is reproduced").click()
    page.keyboard.press("Delete")
    page.wait_for_selector(".rx-req:has-text('Node a is reproduced')", state="detached")
    assert not RubricNode.objects.filter(paper=paper, node_id="a").exists()
    _press(page, "Control+z", "Undone")
    page.wait_for_selector(".rx-req:has-text('Node a is reproduced')")
    assert json.dumps(export_draft(paper)) == before


def test_cut_and_paste_moves_a_node_and_cycles_are_refused(page, live_server, personas, browser_login):
    paper = make_paper()
    _open(page, live_server, browser_login, personas["curator"], paper)
    _row(page, "Leaf b is done").click()
    page.keyboard.press("x")
    _row(page, "Node c is reproduced").click()
    _press(page, "v", "Moved")
    assert _ids(paper, "c") == ["c1", "b"]
    # Cutting c and pasting it into its own child is refused in the page.
    _row(page, "Node c is reproduced").click()
    page.keyboard.press("x")
    _row(page, "Leaf c1 is done").click()
    page.keyboard.press("v")
    assert "own subtree" in page.locator("#rx-status").inner_text()
    assert _ids(paper, "root") == ["a", "c"]


def test_alt_arrows_reorder_siblings_and_undo_restores_the_order(page, live_server, personas, browser_login):
    paper = make_paper()
    _open(page, live_server, browser_login, personas["curator"], paper)
    _row(page, "Node a is reproduced").click()
    _press(page, "Alt+ArrowDown", "Moved")
    assert _ids(paper, "root") == ["b", "a", "c"]
    _press(page, "Control+z", "Undone")
    assert _ids(paper, "root") == ["a", "b", "c"]


def test_drag_and_drop_moves_a_node_into_another(page, live_server, personas, browser_login):
    paper = make_paper()
    _open(page, live_server, browser_login, personas["curator"], paper)
    _row(page, "Leaf b is done").drag_to(_row(page, "Node c is reproduced"))
    page.wait_for_function("document.getElementById('rx-status').textContent === 'Moved'")
    assert _ids(paper, "c") == ["c1", "b"]


def test_arrow_keys_walk_the_tree_and_question_mark_shows_shortcuts(page, live_server, personas, browser_login):
    paper = make_paper()
    _open(page, live_server, browser_login, personas["viewer"], paper)
    page.locator("#rx-tree").click()
    page.keyboard.press("Home")
    page.keyboard.press("ArrowDown")
    assert "Node a is reproduced" in page.locator(".rx-row.selected").inner_text()
    page.keyboard.press("ArrowRight")  # expand a
    page.keyboard.press("ArrowRight")  # into a1
    assert "Leaf a1 is done" in page.locator(".rx-row.selected").inner_text()
    page.keyboard.press("ArrowLeft")  # back to a
    assert "Node a is reproduced" in page.locator(".rx-row.selected").inner_text()
    page.keyboard.press("?")
    assert page.locator("#rx-help").is_visible()


def test_search_shows_matches_with_their_ancestors(page, live_server, personas, browser_login):
    paper = make_paper()
    _open(page, live_server, browser_login, personas["viewer"], paper)
    page.fill("#rx-search", "a2")
    page.wait_for_function("document.getElementById('rx-status').textContent === '1 match'")
    assert page.locator(".rx-req").all_inner_texts() == ["Node root is reproduced", "Node a is reproduced",
                                                         "Leaf a2 is done"]


def test_a_stale_edit_offers_merge_and_the_merged_text_is_saved(page, live_server, personas, browser_login):
    paper = make_paper()
    _open(page, live_server, browser_login, personas["curator"], paper)
    # Another curator changes b after this page loaded it.
    update_node(paper, pk_of(paper, "b"), 1, {"requirements": "Their wording"})
    _row(page, "Leaf b is done").click()
    page.keyboard.press("Enter")
    page.locator(".rx-inline").fill("My wording")
    page.keyboard.press("Enter")
    page.wait_for_selector("#rx-conflict[open]")
    assert "Their wording" in page.locator("#rx-conflict-theirs").inner_text()
    page.fill("#rx-conflict-merged", "Their wording, and mine")
    page.click("#rx-conflict [data-choice=merge]")
    page.wait_for_function("document.getElementById('rx-status').textContent === 'Saved'")
    node = RubricNode.objects.get(paper=paper, node_id="b")
    assert node.requirements == "Their wording, and mine" and node.version == 3


def test_a_stale_edit_can_overwrite(page, live_server, personas, browser_login):
    paper = make_paper()
    _open(page, live_server, browser_login, personas["curator"], paper)
    update_node(paper, pk_of(paper, "b"), 1, {"weight": 7})
    _row(page, "Leaf b is done").click()
    page.fill("#rx-field-weight", "3")
    page.locator("#rx-field-weight").dispatch_event("change")
    page.wait_for_selector("#rx-conflict[open]")
    page.click("#rx-conflict [data-choice=overwrite]")
    page.wait_for_function("document.getElementById('rx-status').textContent === 'Saved'")
    assert RubricNode.objects.get(paper=paper, node_id="b").weight == 3


def test_the_largest_sample_opens_and_edits_smoothly(page, live_server, personas, browser_login):
    from apps.papers.services import import_paper, read_rubric_file

    paper = import_paper(read_rubric_file(SAMPLES / "rubrics" / "bam.rubric.json")).paper
    _open(page, live_server, browser_login, personas["curator"], paper)
    # Only the root and its children are in the DOM until something is expanded.
    assert page.locator(".rx-item").count() < 20
    page.click("#rx-expand-all")
    assert page.locator(".rx-item").count() == 1021
    timing = page.evaluate("""async () => {
        const t0 = performance.now();
        document.getElementById('rx-search').value = 'variational';
        document.getElementById('rx-search').dispatchEvent(new Event('input'));
        await new Promise(r => setTimeout(r, 200));
        return performance.now() - t0;
    }""")
    assert timing < 1000


def test_save_version_from_the_editor_records_a_numbered_version(page, live_server, personas, browser_login):
    paper = make_paper()
    update_node(paper, pk_of(paper, "b"), 1, {"weight": 4})
    _open(page, live_server, browser_login, personas["curator"], paper)
    page.on("dialog", lambda dialog: pytest.fail(f"a browser dialog ({dialog.type}) blocked the page"))
    page.click("#rx-save-version")
    page.fill("#rx-version-message", "b weighs more")
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('rx-status').textContent === 'Saved version 2'")
    assert paper.rubric_versions.get(number=2).message == "b weighs more"


def test_a_first_child_takes_over_its_leaf_parents_category_in_one_undo_step(page, live_server, personas, browser_login):
    paper = make_paper()
    _open(page, live_server, browser_login, personas["curator"], paper)
    _row(page, "Leaf b is done").click()
    page.keyboard.press("a")
    page.locator(".rx-inline").fill("Sub-check of b")
    page.keyboard.press("Enter")
    page.wait_for_selector(".rx-req:has-text('Sub-check of b')")
    _wait_saved(page)
    b = RubricNode.objects.get(paper=paper, node_id="b")
    child = b.children.get()
    assert b.task_category is None and child.task_category == "Result Analysis"
    assert draft_problems(load_draft(paper)) == []
    page.locator("#rx-tree").click()
    _press(page, "Control+z", "Undone")  # the requirements text
    _press(page, "Control+z", "Undone")  # the add and the category move, together
    b.refresh_from_db()
    assert b.task_category == "Result Analysis" and not b.children.exists()


def test_the_editor_notices_another_curators_change(page, live_server, personas, browser_login):
    paper = make_paper()
    page.clock.install()
    _open(page, live_server, browser_login, personas["curator"], paper)
    # Our own edit must not count as someone else's.
    _row(page, "Leaf b is done").click()
    page.keyboard.press("Enter")
    page.locator(".rx-inline").fill("My own change")
    page.keyboard.press("Enter")
    page.wait_for_selector(".rx-req:has-text('My own change')")
    page.clock.run_for(11_000)
    page.wait_for_timeout(500)
    page.clock.run_for(11_000)
    page.wait_for_timeout(500)
    assert page.locator("#rx-remote").is_hidden()
    node = RubricNode.objects.get(paper=paper, node_id="c")
    update_node(paper, node.pk, node.version, {"requirements": "Changed elsewhere"})
    page.clock.run_for(11_000)
    page.wait_for_selector("#rx-remote", state="visible")
