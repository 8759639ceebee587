from __future__ import annotations

import pytest

from apps.judging.judge.grader import JudgeSettings, grade_tree, graded_tree
from apps.judging.judge.parsing import ParseError, parse_judgement
from apps.judging.judge.prompts import prior_nodes
from apps.judging.judge.submission import Submission
from apps.judging.llm import ChatClient, EndpointConfig
from apps.rubrics.paperbench import flatten, leaf_mask
from apps.rubrics.scoring import score_tree
from tests.judging.helpers import PAPER, leaf, make_submission, node, small_tree
from tests.support.openai_stub import OpenAIStub, stub_score


@pytest.fixture
def submission(tmp_path):
    return Submission(make_submission(tmp_path / "submission"))


def client_for(stub: OpenAIStub, **overrides) -> ChatClient:
    values = {"name": f"judge-{id(stub)}", "base_url": stub.base_url, "model": "stub-model", "concurrency": 4,
              "max_retries": 1, "backoff_base_s": 0.01, "price_input_per_m": 3.0, "price_output_per_m": 12.0}
    values.update(overrides)
    return ChatClient(EndpointConfig(**values), sleep=lambda s: None)


def test_every_leaf_gets_the_stub_verdict_and_the_tree_is_scored_with_rubric_scoring(stub, submission):
    nodes = flatten(small_tree())
    outcome = grade_tree(nodes, PAPER, submission, client_for(stub))
    is_leaf = leaf_mask(nodes)
    expected = {i: stub_score(nodes[i].requirements) for i in range(len(nodes)) if is_leaf[i]}
    assert {i: r.score for i, r in outcome.results.items()} == expected
    assert outcome.scores == score_tree(nodes, expected)
    assert outcome.n_invalid == 0


def test_the_prompt_carries_paper_addenda_files_criterion_and_its_preceding_criteria(stub, submission):
    nodes = flatten(small_tree())
    outcome = grade_tree(nodes, PAPER, submission, client_for(stub))
    ce_leaf = next(r for r in outcome.results.values() if r.category == "Code Execution")
    text = "\n".join(m["content"] for m in ce_leaf.messages)
    for part in (PAPER.markdown, PAPER.addendum, PAPER.judge_addendum, "<criterion>\nThe training script runs",
                 " -> Reproduce the tiny paper\n -> Data pipeline\n -> Training\n -> The classifier training loop",
                 "reproduce.sh", "epoch 3", "Does running reproduce.sh"):
        assert part in text
    assert ce_leaf.files and all(not f.endswith(".bin") for f in ce_leaf.files)
    cd_leaf = next(r for r in outcome.results.values() if r.category == "Code Development")
    assert "<reproduce.log>" not in "\n".join(m["content"] for m in cd_leaf.messages)


def test_preceding_criteria_follow_paperbench_get_prior_nodes():
    # PaperBench's docstring example: A > (B > D, E), (C > F, G); G's prior nodes are A, B, C, F.
    tree = node("A", node("B", leaf("D"), leaf("E")), node("C", leaf("F"), leaf("G")))
    nodes = flatten(tree)
    children = [[n.index for n in nodes if n.parent == i] for i in range(len(nodes))]
    g = next(n.index for n in nodes if n.requirements == "G")
    assert [nodes[i].requirements for i in prior_nodes(nodes, g, children)] == ["A", "B", "C", "F"]
    assert [nodes[i].requirements for i in prior_nodes(nodes, g, children, limit=2)] == ["C", "F"]


def test_a_malformed_answer_is_retried_then_the_leaf_is_invalid_not_zero(stub, submission):
    stub.state.malformed_when = "Images are normalised"
    nodes = flatten(small_tree())
    outcome = grade_tree(nodes, PAPER, submission, client_for(stub), JudgeSettings(parse_retries=2))
    bad = next(r for r in outcome.results.values() if "normalised" in nodes[r.index].requirements)
    assert not bad.valid and bad.score is None
    assert bad.calls == 3
    assert "no usable verdict after 3 answer(s)" in bad.invalid_reason
    assert bad.response.startswith("Hmm")
    assert outcome.n_invalid == 1


def test_invalid_leaves_are_counted_on_every_ancestor(stub, submission):
    stub.state.malformed_when = "Images are normalised"
    nodes = flatten(small_tree())
    outcome = grade_tree(nodes, PAPER, submission, client_for(stub), JudgeSettings(parse_retries=0))
    by_req = {n.requirements: n.index for n in nodes}
    assert outcome.invalid_below[0] == 1
    assert outcome.invalid_below[by_req["Data pipeline"]] == 1
    assert outcome.invalid_below[by_req["Training"]] == 0
    graded = graded_tree(outcome)
    assert graded["valid_score"] is False and graded["judge_metadata"]["invalid_leaves"] == 1
    data, training = graded["sub_tasks"][0], graded["sub_tasks"][1]
    assert data["valid_score"] is False and training["valid_score"] is True
    bad_leaf = data["sub_tasks"][1]
    assert bad_leaf["valid_score"] is False and "no usable verdict" in bad_leaf["explanation"]


def test_an_endpoint_that_is_down_makes_every_leaf_invalid_with_the_reason(stub, submission):
    client = client_for(stub)
    stub.down()
    nodes = flatten(small_tree())
    outcome = grade_tree(nodes, PAPER, submission, client)
    assert outcome.n_invalid == len(outcome.results) == 5
    assert all("cannot connect" in r.invalid_reason for r in outcome.results.values())
    assert outcome.invalid_below[0] == 5


def test_a_judge_that_says_valid_score_false_makes_the_leaf_invalid():
    verdict = parse_judgement('Cannot tell.\n{"valid_score": false, "score": 0, "explanation": "no files"}')
    assert verdict.valid_score is False


@pytest.mark.parametrize("answer, score", [
    ('Reality: ok\n```json\n{"valid_score": true, "score": 1, "explanation": "fine"}\n```\nThanks!', 1),
    ('{"score": "0", "explanation": "missing"}', 0),
    ("# Expectations\nx\n# Reality\ny\n# Score\n1\n", 1),
    ("Expectations: x\n**Score:** 0", 0),
])
def test_verdicts_are_parsed_from_the_usual_answer_shapes(answer, score):
    assert parse_judgement(answer).score == score


@pytest.mark.parametrize("answer", ["", "It looks good to me.", '{"score": 0.5}', '{"score": true}'])
def test_answers_without_a_0_or_1_verdict_are_parse_errors(answer):
    with pytest.raises(ParseError):
        parse_judgement(answer)


def test_code_development_only_mode_grades_only_those_leaves_and_scores_the_reduced_tree(stub, submission):
    nodes = flatten(small_tree())
    outcome = grade_tree(nodes, PAPER, submission, client_for(stub), JudgeSettings(code_only=True))
    assert {r.category for r in outcome.results.values()} == {"Code Development"}
    assert len(outcome.results) == 3
    expected = {r.index: r.score for r in outcome.results.values()}
    assert outcome.scores == score_tree(nodes, expected, category="Code Development")
    assert all("<reproduce.sh>" not in m["content"] for r in outcome.results.values() for m in r.messages)


def test_run_totals_add_up_the_tokens_and_cost_of_every_call_including_retries(stub, submission):
    stub.state.malformed_when = "Images are normalised"
    nodes = flatten(small_tree())
    outcome = grade_tree(nodes, PAPER, submission, client_for(stub), JudgeSettings(parse_retries=1))
    totals = outcome.totals()
    assert totals["calls"] == len(stub.requests) == 6  # 5 leaves, one retried once
    assert totals["prompt_tokens"] == sum(r.prompt_tokens for r in outcome.results.values())
    assert totals["cost_usd"] == pytest.approx((totals["prompt_tokens"] * 3.0 + totals["completion_tokens"] * 12.0) / 1e6)


def test_leaves_are_graded_concurrently_up_to_the_endpoint_limit(stub, submission):
    stub.state.delay_s = 0.05
    tree = node("root", *[leaf(f"criterion number {i}") for i in range(12)])
    outcome = grade_tree(flatten(tree), PAPER, submission, client_for(stub, concurrency=3))
    assert len(outcome.results) == 12
    assert stub.state.max_in_flight == 3
