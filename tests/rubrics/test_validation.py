from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from apps.rubrics.paperbench import FlatNode, flatten, load_json_bytes
from apps.rubrics.validation import Problem, errors, validate_json, validate_tree

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "paperbench"
SAMPLES = sorted(DATA.glob("*/*.json"))


def leaf(label: str = "Leaf", **fields: Any) -> dict[str, Any]:
    node = {
        "id": f"id-{label}",
        "requirements": label,
        "weight": 1,
        "sub_tasks": [],
        "task_category": "Code Development",
        "finegrained_task_category": None,
    }
    node.update(fields)
    return node


def inner(label: str, children: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    node = {
        "id": f"id-{label}",
        "requirements": label,
        "weight": 1,
        "sub_tasks": children,
        "task_category": None,
        "finegrained_task_category": None,
    }
    node.update(fields)
    return node


def rubric(target: dict[str, Any]) -> dict[str, Any]:
    """A valid tree with ``target`` at path "root > 2 Data > 2.1 ..."."""
    return inner("Paper", [leaf("Setup"), inner("Data", [target, leaf("Other")])])


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, problems
    return problems[0]


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_shared_sample_has_no_errors(path: Path) -> None:
    problems = validate_json(load_json_bytes(path.read_bytes()))

    assert errors(problems) == []


def test_repeated_id_in_sample_is_a_warning_naming_every_path() -> None:
    tree = load_json_bytes((DATA / "fixtures" / "hex_flag_context.json").read_bytes())

    problem = only(validate_json(tree))

    assert (problem.level, problem.code) == ("warning", "duplicate_id")
    assert "4b9e1b5e-98a1-4f3c-88fa-fb9e7846c1bb appears 2 times" in problem.message
    assert "root; root > 1 The submission contains a single file na…" in problem.message


def test_valid_tree_has_no_problems() -> None:
    assert validate_json(rubric(leaf("Load CIFAR"))) == []


def test_path_uses_positions_and_start_of_requirements() -> None:
    problem = only(validate_json(rubric(leaf("Load CIFAR", weight=-1))))

    assert problem.path == "root > 2 Data > 2.1 Load CIFAR"
    assert problem.node_index == 3


def test_path_cuts_requirements_to_forty_characters() -> None:
    long = "Load the CIFAR-10 training split from torchvision and normalise it"

    problem = only(validate_json(rubric(leaf(long, weight=-1))))

    assert problem.path == "root > 2 Data > 2.1 Load the CIFAR-10 training split from to…"


@pytest.mark.parametrize("key", ["id", "requirements", "weight", "sub_tasks"])
def test_missing_required_key_is_an_error_naming_key_and_path(key: str) -> None:
    node = leaf("Load CIFAR")
    del node[key]

    problem = next(p for p in validate_json(rubric(node)) if p.code == "missing_key")

    assert problem.level == "error"
    assert repr(key) in problem.message
    assert problem.path.startswith("root > 2 Data > 2.1")


@pytest.mark.parametrize("weight", ["1", None, True, [1], float("nan")])
def test_non_numeric_weight_is_an_error(weight: Any) -> None:
    problem = only(validate_json(rubric(leaf("Load CIFAR", weight=weight))))

    assert (problem.level, problem.code) == ("error", "weight_not_number")
    assert problem.path == "root > 2 Data > 2.1 Load CIFAR"


def test_negative_weight_is_an_error() -> None:
    problem = only(validate_json(rubric(leaf("Load CIFAR", weight=-0.5))))

    assert (problem.level, problem.code) == ("error", "negative_weight")


def test_float_weight_is_accepted() -> None:
    assert validate_json(rubric(leaf("Load CIFAR", weight=0.5))) == []


def test_task_category_on_inner_node_is_an_error() -> None:
    tree = inner(
        "Paper",
        [leaf("Setup"), inner("Data", [leaf("Load CIFAR")], task_category="Code Execution")],
    )

    problem = only(validate_json(tree))

    assert (problem.level, problem.code) == ("error", "category_on_inner_node")
    assert problem.path == "root > 2 Data"


def test_inner_node_without_task_category_key_is_accepted() -> None:
    node = inner("Data", [leaf("Load CIFAR")])
    del node["task_category"]

    assert validate_json(inner("Paper", [node])) == []


@pytest.mark.parametrize("absent", [True, False], ids=["absent", "null"])
def test_leaf_without_task_category_is_an_error(absent: bool) -> None:
    node = leaf("Load CIFAR", task_category=None)
    if absent:
        del node["task_category"]

    problem = only(validate_json(rubric(node)))

    assert (problem.level, problem.code) == ("error", "missing_task_category")
    assert problem.path == "root > 2 Data > 2.1 Load CIFAR"


def test_unknown_task_category_is_an_error() -> None:
    problem = only(validate_json(rubric(leaf("Load CIFAR", task_category="Coding"))))

    assert (problem.level, problem.code) == ("error", "unknown_task_category")
    assert "'Coding'" in problem.message


def test_runtime_subtree_category_on_a_leaf_is_a_warning() -> None:
    problem = only(validate_json(rubric(leaf("Load CIFAR", task_category="Subtree"))))

    assert (problem.level, problem.code) == ("warning", "runtime_task_category")


def test_unknown_finegrained_task_category_is_an_error() -> None:
    node = leaf("Load CIFAR", finegrained_task_category="Data Loading")

    problem = only(validate_json(rubric(node)))

    assert (problem.level, problem.code) == ("error", "unknown_finegrained_task_category")
    assert problem.path == "root > 2 Data > 2.1 Load CIFAR"


def test_known_finegrained_task_category_is_accepted() -> None:
    node = leaf("Load CIFAR", finegrained_task_category="Data Processing & Preparation")

    assert validate_json(rubric(node)) == []


def test_absent_finegrained_task_category_is_accepted() -> None:
    node = leaf("Load CIFAR")
    del node["finegrained_task_category"]

    assert validate_json(rubric(node)) == []


def test_whitespace_requirements_are_an_error() -> None:
    node = leaf("Load CIFAR", requirements="  \n ")

    problem = only(validate_json(rubric(node)))

    assert (problem.level, problem.code) == ("error", "empty_requirements")
    assert problem.path == "root > 2 Data > 2.1"


def test_non_text_requirements_are_an_error() -> None:
    problem = only(validate_json(rubric(leaf("Load CIFAR", requirements=7))))

    assert (problem.level, problem.code) == ("error", "requirements_not_string")


def test_non_string_id_is_an_error() -> None:
    problem = only(validate_json(rubric(leaf("Load CIFAR", id=7))))

    assert (problem.level, problem.code) == ("error", "invalid_id")


def test_zero_weight_siblings_are_an_error_on_their_parent() -> None:
    data = inner("Data", [leaf("Load CIFAR", weight=0), leaf("Load MNIST", weight=0)])

    problem = only(validate_json(inner("Paper", [leaf("Setup"), data])))

    assert (problem.level, problem.code) == ("error", "zero_weight_sum")
    assert problem.path == "root > 2 Data"


def test_one_zero_weight_among_positive_siblings_is_accepted() -> None:
    assert validate_json(rubric(leaf("Load CIFAR", weight=0))) == []


def test_duplicate_ids_warning_names_the_id_and_every_path() -> None:
    tree = rubric(leaf("Load CIFAR", id="id-Setup"))

    problem = only(validate_json(tree))

    assert (problem.level, problem.code) == ("warning", "duplicate_id")
    assert "id-Setup appears 2 times" in problem.message
    assert "root > 1 Setup; root > 2 Data > 2.1 Load CIFAR" in problem.message


def test_editor_node_without_key_order_has_no_missing_keys() -> None:
    nodes = flatten(inner("Paper", [leaf("Setup")]))
    nodes.append(
        FlatNode(2, 0, 1, "new", "New leaf", 1, task_category="Result Analysis", key_order=None)
    )

    assert validate_tree(nodes) == []


def test_non_object_node_is_reported_with_its_path() -> None:
    tree = inner("Paper", [leaf("Setup"), inner("Data", [leaf("Load CIFAR"), "oops"])])

    problem = only(validate_json(tree))

    assert (problem.level, problem.code) == ("error", "node_not_object")
    assert problem.path == "root > 2 Data > 2.2"
    assert "a string" in problem.message


def test_sub_tasks_that_is_not_a_list_is_reported_with_its_path() -> None:
    problem = only(validate_json(rubric(leaf("Load CIFAR", sub_tasks={"a": 1}))))

    assert (problem.level, problem.code) == ("error", "sub_tasks_not_list")
    assert problem.path == "root > 2 Data > 2.1 Load CIFAR"


def test_every_structural_fault_is_reported() -> None:
    tree = inner("Paper", [None, inner("Data", [leaf("Load CIFAR", sub_tasks=3)])])

    problems = validate_json(tree)

    assert [(p.code, p.path) for p in problems] == [
        ("node_not_object", "root > 1"),
        ("sub_tasks_not_list", "root > 2 Data > 2.1 Load CIFAR"),
    ]


def test_top_level_that_is_not_an_object_is_reported() -> None:
    problem = only(validate_json([]))

    assert (problem.code, problem.path) == ("node_not_object", "root")
