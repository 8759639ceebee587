from __future__ import annotations

import json

import pytest

from apps.papers.models import Paper
from apps.rubrics.models import RubricNode, RubricVersion
from apps.rubrics.services.diff import diff_trees, word_diff
from apps.rubrics.services.editor import draft_problems, editor_payload
from apps.rubrics.services.edits import (
    add_node,
    add_subtree,
    delete_subtree,
    duplicate_subtree,
    move_node,
    update_node,
    update_nodes,
)
from apps.rubrics.services.errors import RubricRefused, StaleNode, TreeEditError, UnsavedDraft
from apps.rubrics.services.parsing import parse_rubric_value, tree_hash
from apps.rubrics.services.store import export_draft, load_draft
from apps.rubrics.services.versions import create_version, import_rubric_tree, restore_version
from tests.rubrics.helpers import inner, leaf, make_paper, pk_of, small_tree

pytestmark = pytest.mark.django_db


def _version(paper: Paper, node_id: str) -> int:
    return paper.rubric_nodes.get(node_id=node_id).version


def test_a_stored_draft_exports_the_same_json_value_with_key_order():
    tree = small_tree()
    paper = make_paper(tree)
    assert json.dumps(export_draft(paper)) == json.dumps(tree)


def test_versions_are_numbered_and_hash_their_content():
    paper = make_paper()
    update_node(paper, pk_of(paper, "b"), 1, {"weight": 5})
    v2 = create_version(paper, None, "heavier b")
    assert [v.number for v in paper.rubric_versions.order_by("number")] == [1, 2]
    assert v2.message == "heavier b" and v2.content_hash == tree_hash(v2.tree)
    assert v2.content_hash != paper.rubric_versions.get(number=1).content_hash


def test_a_version_with_errors_is_refused_and_not_saved():
    paper = make_paper()
    update_node(paper, pk_of(paper, "b"), 1, {"requirements": "  "})
    with pytest.raises(RubricRefused) as refused:
        create_version(paper, None, "broken")
    assert [p.code for p in refused.value.problems] == ["empty_requirements"]
    assert paper.rubric_versions.count() == 1


def test_restore_makes_an_old_version_the_draft_as_a_new_version():
    paper = make_paper()
    delete_subtree(paper, pk_of(paper, "a"), None)
    create_version(paper, None, "no a")
    done = restore_version(paper.rubric_versions.get(number=1))
    v3 = done.version
    assert v3.number == 3 and v3.message == "Restored version 1" and done.kept is None
    assert json.dumps(export_draft(paper)) == json.dumps(small_tree())
    assert v3.content_hash == paper.rubric_versions.get(number=1).content_hash


def test_diff_lists_added_removed_moved_and_changed_nodes():
    old = small_tree()
    new = small_tree()
    a = new["sub_tasks"][0]
    a2 = a["sub_tasks"].pop(1)
    new["sub_tasks"][2]["sub_tasks"].append(a2)  # a2 moves under c
    new["sub_tasks"].pop(1)  # b removed
    new["sub_tasks"].append(leaf("d"))  # d added
    a["sub_tasks"][0]["weight"] = 4
    a["sub_tasks"][0]["requirements"] = "Changed text"
    diff = diff_trees(old, new)
    assert [d["id"] for d in diff.added] == ["d"]
    assert [d["id"] for d in diff.removed] == ["b"]
    assert [(d["id"], d["kind"]) for d in diff.moved] == [("a2", "moved")]
    assert {(c["id"], c["field"], c["old"], c["new"]) for c in diff.changed} == {
        ("a1", "weight", 1, 4), ("a1", "requirements", "Leaf a1 is done", "Changed text")}


def test_diff_does_not_call_siblings_shifted_by_an_insertion_moved():
    new = small_tree()
    new["sub_tasks"].insert(0, leaf("first"))
    diff = diff_trees(small_tree(), new)
    assert [d["id"] for d in diff.added] == ["first"] and diff.moved == []


def test_diff_reports_a_reorder_among_siblings():
    new = small_tree()
    new["sub_tasks"].reverse()
    diff = diff_trees(small_tree(), new)
    assert {d["kind"] for d in diff.moved} == {"reordered"} and diff.added == diff.removed == []


def test_diff_matches_repeated_ids_by_parent_then_order():
    old = inner("root", [inner("x", [leaf("dup")]), inner("y", [leaf("dup")])])
    new = inner("root", [inner("x", [leaf("dup")]), inner("y", [leaf("dup", weight=2)])])
    diff = diff_trees(old, new)
    assert diff.added == diff.removed == diff.moved == []
    assert [(c["path"].split(" > ")[1][:1], c["field"]) for c in diff.changed] == [("2", "weight")]


def test_diff_of_identical_trees_is_empty():
    assert diff_trees(small_tree(), small_tree()).is_empty


def test_an_edit_with_the_current_version_bumps_it():
    paper = make_paper()
    node = update_node(paper, pk_of(paper, "b"), 1, {"requirements": "New", "weight": 2.0})
    assert node.version == 2 and node.requirements == "New"
    assert node.weight == 2 and isinstance(node.weight, int)


def test_a_stale_edit_raises_with_the_current_node_and_changes_nothing():
    paper = make_paper()
    pk = pk_of(paper, "b")
    update_node(paper, pk, 1, {"requirements": "First curator"})
    with pytest.raises(StaleNode) as stale:
        update_node(paper, pk, 1, {"requirements": "Second curator"})
    assert stale.value.current.requirements == "First curator" and stale.value.current.version == 2
    assert RubricNode.objects.get(pk=pk).requirements == "First curator"


@pytest.mark.parametrize("changes", [{"weight": -1}, {"weight": "heavy"}, {"task_category": "Cooking"},
                                     {"node_id": "x"}])
def test_bad_node_values_are_refused(changes):
    paper = make_paper()
    with pytest.raises(TreeEditError):
        update_node(paper, pk_of(paper, "b"), 1, changes)


def test_add_node_inserts_a_fresh_leaf_at_a_position():
    paper = make_paper()
    node = add_node(paper, pk_of(paper, "a"), 1, requirements="Middle")
    tree = export_draft(paper)
    kids = tree["sub_tasks"][0]["sub_tasks"]
    assert [k["id"] for k in kids] == ["a1", node.node_id, "a2"]
    assert list(kids[1]) == ["id", "requirements", "weight", "sub_tasks", "task_category",
                             "finegrained_task_category"]
    assert len(node.node_id) == 36  # a uuid4


def test_move_changes_parent_and_keeps_sibling_positions_dense():
    paper = make_paper()
    move_node(paper, pk_of(paper, "a2"), 1, pk_of(paper, "c"), 0)
    tree = export_draft(paper)
    assert [k["id"] for k in tree["sub_tasks"][0]["sub_tasks"]] == ["a1"]
    assert [k["id"] for k in tree["sub_tasks"][2]["sub_tasks"]] == ["a2", "c1"]
    positions = sorted(RubricNode.objects.filter(parent_id=pk_of(paper, "c")).values_list("position", flat=True))
    assert positions == [0, 1]


def test_reordering_within_a_parent_moves_to_the_final_index():
    paper = make_paper()
    move_node(paper, pk_of(paper, "a"), 1, pk_of(paper, "root"), 2)
    assert [k["id"] for k in export_draft(paper)["sub_tasks"]] == ["b", "c", "a"]


def test_moving_a_node_into_its_own_subtree_is_refused():
    paper = make_paper()
    with pytest.raises(TreeEditError, match="own subtree"):
        move_node(paper, pk_of(paper, "a"), 1, pk_of(paper, "a1"), 0)


def test_a_stale_move_is_refused():
    paper = make_paper()
    pk = pk_of(paper, "b")
    update_node(paper, pk, 1, {"weight": 2})
    with pytest.raises(StaleNode):
        move_node(paper, pk, 1, pk_of(paper, "a"), 0)


def test_delete_removes_the_subtree_and_returns_it_for_undo():
    paper = make_paper()
    removed = delete_subtree(paper, pk_of(paper, "a"), 1)
    assert [k["id"] for k in export_draft(paper)["sub_tasks"]] == ["b", "c"]
    assert RubricNode.objects.filter(paper=paper).count() == 4
    add_subtree(paper, removed.parent, removed.position, removed.subtree)
    assert json.dumps(export_draft(paper)) == json.dumps(small_tree())


def test_the_root_cannot_be_deleted():
    paper = make_paper()
    with pytest.raises(TreeEditError):
        delete_subtree(paper, pk_of(paper, "root"), None)


def test_duplicate_copies_a_subtree_after_itself_with_fresh_ids():
    paper = make_paper()
    rows = duplicate_subtree(paper, pk_of(paper, "a"))
    tree = export_draft(paper)
    copy = tree["sub_tasks"][1]
    assert [k["id"] for k in tree["sub_tasks"]][0] == "a" and len(rows) == 3
    assert copy["requirements"] == "Node a is reproduced"
    ids = {copy["id"], *(k["id"] for k in copy["sub_tasks"])}
    assert ids.isdisjoint({"a", "a1", "a2"}) and len(ids) == 3


def test_editor_payload_has_effective_weights_that_sum_to_one_over_leaves():
    paper = make_paper()
    payload = editor_payload(load_draft(paper))
    by_id = {n["id"]: n for n in payload["nodes"]}
    # root children weights 2,1,1 -> a = 0.5; a1:a2 = 1:3
    assert by_id["a2"]["share"] == pytest.approx(0.375)
    leaves = [n for n in payload["nodes"] if n["id"] in {"a1", "a2", "b", "c1"}]
    assert sum(n["share"] for n in leaves) == pytest.approx(1.0)


def test_draft_problems_name_the_node_row():
    paper = make_paper()
    pk = pk_of(paper, "a")
    update_node(paper, pk, 1, {"task_category": "Code Development"})
    problems = draft_problems(load_draft(paper))
    assert [(p["code"], p["node"]) for p in problems] == [("category_on_inner_node", pk)]


def test_reimporting_the_same_tree_adds_no_version():
    paper = make_paper()
    assert import_rubric_tree(paper, parse_rubric_value(small_tree())) is None
    assert RubricVersion.objects.filter(paper=paper).count() == 1


def test_nested_objects_keep_their_key_order_through_the_database():
    tree = small_tree()
    tree["judge_metadata"] = {"zeta": 1, "alpha": {"y": 2, "b": 3}}
    tree["sub_tasks"][1]["custom"] = {"z": None, "a": [1.0, 2]}
    paper = make_paper(tree)
    assert json.dumps(export_draft(paper)) == json.dumps(tree)


def test_restore_refuses_to_replace_draft_edits_that_no_version_holds():
    paper = make_paper()
    update_node(paper, pk_of(paper, "b"), 1, {"requirements": "Unsaved wording"})
    with pytest.raises(UnsavedDraft) as asked:
        restore_version(paper.rubric_versions.get(number=1))
    assert asked.value.latest_number == 1 and asked.value.draft_hash == tree_hash(export_draft(paper))
    assert paper.rubric_nodes.get(node_id="b").requirements == "Unsaved wording"
    assert paper.rubric_versions.count() == 1


def test_restore_keeps_the_draft_as_a_version_first_when_asked():
    paper = make_paper()
    update_node(paper, pk_of(paper, "b"), 1, {"requirements": "Unsaved wording"})
    done = restore_version(paper.rubric_versions.get(number=1), draft="keep")
    assert (done.kept.number, done.version.number) == (2, 3)
    assert "Unsaved wording" in done.kept.tree_json and json.dumps(export_draft(paper)) == json.dumps(small_tree())


def test_restore_discards_only_the_draft_the_user_saw():
    paper = make_paper()
    update_node(paper, pk_of(paper, "b"), 1, {"requirements": "Seen"})
    seen = tree_hash(export_draft(paper))
    update_node(paper, pk_of(paper, "b"), 2, {"requirements": "Typed after the user looked"})
    with pytest.raises(UnsavedDraft):
        restore_version(paper.rubric_versions.get(number=1), draft="discard", draft_hash=seen)
    done = restore_version(paper.rubric_versions.get(number=1), draft="discard",
                           draft_hash=tree_hash(export_draft(paper)))
    assert done.kept is None and done.version.number == 2


def test_a_draft_with_errors_cannot_be_kept_and_nothing_is_restored():
    paper = make_paper()
    update_node(paper, pk_of(paper, "b"), 1, {"requirements": ""})
    with pytest.raises(RubricRefused):
        restore_version(paper.rubric_versions.get(number=1), draft="keep")
    assert paper.rubric_versions.count() == 1 and paper.rubric_nodes.get(node_id="b").requirements == ""


def test_update_nodes_changes_all_or_none():
    paper = make_paper()
    a1, a2 = pk_of(paper, "a1"), pk_of(paper, "a2")
    update_nodes(paper, [(a1, 1, {"task_category": "Result Analysis"}), (a2, 1, {"task_category": "Result Analysis"})])
    assert set(paper.rubric_nodes.filter(pk__in=[a1, a2]).values_list("task_category", "version")) == {
        ("Result Analysis", 2)}
    with pytest.raises(StaleNode) as stale:
        update_nodes(paper, [(a1, 2, {"task_category": None}), (a2, 1, {"task_category": None})])
    assert stale.value.current.pk == a2
    # The first edit was rolled back with the stale one.
    assert paper.rubric_nodes.get(pk=a1).task_category == "Result Analysis"
    with pytest.raises(TreeEditError):
        update_nodes(paper, [(a1, 2, {"task_category": "No such category"})])


def test_a_word_diff_marks_only_the_words_that_changed():
    runs = word_diff("The model is trained on CIFAR-10 for 10 epochs", "The model is fine-tuned on CIFAR-100 for 10 epochs")
    assert runs == [["same", "The model is "], ["del", "trained"], ["ins", "fine-tuned"], ["same", " on "],
                    ["del", "CIFAR-10"], ["ins", "CIFAR-100"], ["same", " for 10 epochs"]]
    assert "".join(t for op, t in runs if op != "ins") == "The model is trained on CIFAR-10 for 10 epochs"
