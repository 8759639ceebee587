from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.rubrics.paperbench import (
    CANONICAL_KEY_ORDER,
    FlatNode,
    RubricFormatError,
    flatten,
    leaf_mask,
    load_json_bytes,
    unflatten,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "paperbench"
SAMPLES = sorted(DATA.glob("*/*.json"))


def sample(relative: str) -> dict[str, Any]:
    return load_json_bytes((DATA / relative).read_bytes())


def leaf(node_id: str, requirements: str = "Leaf", weight: Any = 1) -> dict[str, Any]:
    return {
        "id": node_id,
        "requirements": requirements,
        "weight": weight,
        "sub_tasks": [],
        "task_category": "Code Development",
        "finegrained_task_category": None,
    }


def inner(
    node_id: str, children: list[dict[str, Any]], requirements: str = "Inner"
) -> dict[str, Any]:
    return {
        "id": node_id,
        "requirements": requirements,
        "weight": 1,
        "sub_tasks": children,
        "task_category": None,
        "finegrained_task_category": None,
    }


def test_shared_samples_are_present() -> None:
    assert len(SAMPLES) == 15


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_round_trip_reproduces_every_sample_exactly(path: Path) -> None:
    tree = load_json_bytes(path.read_bytes())

    assert json.dumps(unflatten(flatten(tree))) == json.dumps(tree)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_export_reproduces_sample_file_text(path: Path) -> None:
    # The samples are json.dumps(indent=4) output, so export can give back the file itself.
    tree = load_json_bytes(path.read_bytes())

    assert json.dumps(unflatten(flatten(tree)), indent=4) == path.read_text().strip()


def test_flatten_lists_nodes_in_pre_order_with_parent_and_position() -> None:
    tree = inner("r", [inner("a", [leaf("a1"), leaf("a2")]), leaf("b")])

    nodes = flatten(tree)

    assert [(n.index, n.node_id, n.parent, n.position) for n in nodes] == [
        (0, "r", None, 0),
        (1, "a", 0, 0),
        (2, "a1", 1, 0),
        (3, "a2", 1, 1),
        (4, "b", 0, 1),
    ]


def test_leaf_mask_marks_nodes_without_children() -> None:
    nodes = flatten(inner("r", [inner("a", [leaf("a1")]), leaf("b")]))

    assert leaf_mask(nodes) == [False, False, True, True]


def test_flatten_keeps_int_and_float_weights_distinct() -> None:
    tree = inner("r", [leaf("a", weight=1), leaf("b", weight=1.0)])

    nodes = flatten(tree)

    assert type(nodes[1].weight) is int
    assert type(nodes[2].weight) is float
    assert '"weight": 1.0' in json.dumps(unflatten(nodes))


def test_load_json_bytes_keeps_float_one_as_float() -> None:
    tree = load_json_bytes(b'{"id": "x", "weight": 1.0, "score": 1, "big": 12345678901234567890}')

    assert json.dumps(tree) == '{"id": "x", "weight": 1.0, "score": 1, "big": 12345678901234567890}'


def test_absent_task_category_stays_absent_on_export() -> None:
    tree = sample("fixtures/hex_flag_context.json")

    nodes = flatten(tree)

    assert nodes[0].task_category is None
    assert not nodes[0].has_key("task_category")
    assert "task_category" not in unflatten(nodes)


def test_null_task_category_stays_null_on_export() -> None:
    nodes = flatten(sample("fixtures/hex_flags.json"))

    assert nodes[0].has_key("task_category")
    assert unflatten(nodes)["task_category"] is None


def test_graded_fields_are_read_from_judge_eval_nodes() -> None:
    nodes = flatten(sample("judge_eval/all-in-one.judge_eval.json"))

    root = nodes[0]
    assert root.score == 0.7139351851851852
    assert root.valid_score is True
    assert root.explanation == "Aggregated score from sub-tasks."
    assert root.has_key("judge_metadata") and root.judge_metadata is None
    assert root.key_order is not None and root.key_order[-1] == "sub_tasks"


def test_repeated_ids_survive_round_trip() -> None:
    tree = sample("fixtures/hex_flag_context.json")

    nodes = flatten(tree)

    assert nodes[0].node_id == nodes[1].node_id
    assert unflatten(nodes) == tree


def test_unknown_keys_are_kept_in_extra_and_exported_in_place() -> None:
    # Upstream PaperBench's adaptive-pruning rubric has leaves with "result": "Pass".
    tree = {
        "id": "a",
        "result": "Pass",
        "requirements": "Leaf",
        "weight": 1,
        "sub_tasks": [],
        "task_category": "Code Development",
    }

    nodes = flatten(tree)

    assert nodes[0].extra == {"result": "Pass"}
    assert list(unflatten(nodes)) == list(tree)


def test_editor_node_exports_canonical_key_order() -> None:
    nodes = flatten(inner("r", [leaf("a")]))
    nodes.append(
        FlatNode(index=2, parent=0, position=1, node_id="new", requirements="New", weight=2)
    )

    exported = unflatten(nodes)["sub_tasks"][1]

    assert list(exported) == list(CANONICAL_KEY_ORDER)
    assert exported == {
        "id": "new",
        "requirements": "New",
        "weight": 2,
        "sub_tasks": [],
        "task_category": None,
        "finegrained_task_category": None,
    }


def test_field_set_after_import_is_exported_after_existing_keys() -> None:
    nodes = flatten(sample("judge_eval/all-in-one.judge_eval.json"))
    nodes[1].finegrained_task_category = "Method Implementation"

    exported = unflatten(nodes)["sub_tasks"][0]

    assert list(exported)[-1] == "finegrained_task_category"
    assert exported["finegrained_task_category"] == "Method Implementation"


def test_children_are_exported_in_position_order() -> None:
    nodes = flatten(inner("r", [leaf("a"), leaf("b"), leaf("c")]))
    nodes[1].position, nodes[3].position = 2, 0

    exported = unflatten(list(reversed(nodes)))

    assert [c["id"] for c in exported["sub_tasks"]] == ["c", "b", "a"]


def test_unflatten_rejects_two_roots() -> None:
    nodes = [FlatNode(0, None, 0, "a"), FlatNode(1, None, 0, "b")]

    with pytest.raises(RubricFormatError, match="Two roots"):
        unflatten(nodes)


def test_unflatten_rejects_a_parent_cycle() -> None:
    nodes = [FlatNode(0, None, 0, "r"), FlatNode(1, 2, 0, "a"), FlatNode(2, 1, 0, "b")]

    with pytest.raises(RubricFormatError, match="cycle"):
        unflatten(nodes)


def test_deep_tree_flattens_without_recursion() -> None:
    tree = leaf("bottom")
    for depth in range(3000):
        tree = inner(f"n{depth}", [tree])

    nodes = flatten(tree)

    assert len(nodes) == 3001
    assert nodes[-1].parent == 2999


def test_load_json_bytes_reports_line_and_column() -> None:
    with pytest.raises(RubricFormatError, match=r"line 3, column 1"):
        load_json_bytes(b'{\n  "id": \n}')


def test_load_json_bytes_rejects_a_top_level_array() -> None:
    with pytest.raises(RubricFormatError, match="top level must be a JSON object, not an array"):
        load_json_bytes(b"[1, 2]")


def test_load_json_bytes_rejects_nan() -> None:
    with pytest.raises(RubricFormatError, match="NaN"):
        load_json_bytes(b'{"weight": NaN}')


def test_load_json_bytes_rejects_a_repeated_key() -> None:
    with pytest.raises(RubricFormatError, match="'weight' appears twice"):
        load_json_bytes(b'{"weight": 1, "weight": 2}')


def test_load_json_bytes_rejects_invalid_utf8() -> None:
    with pytest.raises(RubricFormatError, match="UTF-8"):
        load_json_bytes(b'{"id": "\xff"}')


def test_flatten_error_names_the_path_of_a_non_object_node() -> None:
    tree = inner("r", [leaf("a"), inner("b", [leaf("b1"), 42], requirements="Data")])

    with pytest.raises(RubricFormatError, match=r"^root > 2 Data > 2\.2: .*not a number"):
        flatten(tree)


def test_flatten_error_names_the_path_when_sub_tasks_is_not_a_list() -> None:
    tree = inner("r", [{**leaf("a", requirements="Load CIFAR"), "sub_tasks": None}])

    with pytest.raises(RubricFormatError, match=r"^root > 1 Load CIFAR: sub_tasks must be a list"):
        flatten(tree)


def _json_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**20), 10**20),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
    )


KEYS = [*CANONICAL_KEY_ORDER, "score", "valid_score", "explanation", "judge_metadata", "result"]


@st.composite
def _rubric_trees(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    # Any subset of keys in any order, any scalar values: the codec must not care.
    keys = draw(st.permutations(KEYS))[: draw(st.integers(0, len(KEYS)))]
    node: dict[str, Any] = {}
    for key in keys:
        if key == "sub_tasks":
            size = 0 if depth >= 3 else draw(st.integers(0, 3))
            node[key] = [draw(_rubric_trees(depth + 1)) for _ in range(size)]
        else:
            node[key] = draw(_json_scalars())
    return node


@settings(max_examples=200, deadline=None)
@given(_rubric_trees())
def test_round_trip_holds_for_generated_trees(tree: dict[str, Any]) -> None:
    assert json.dumps(unflatten(flatten(tree))) == json.dumps(tree)
