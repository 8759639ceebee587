from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.judging.judge.metrics import compute_metrics
from apps.rubrics.paperbench import flatten, leaf_mask
from tests.judging.helpers import make_endpoint
from tests.support.openai_stub import stub_score

# Shared sample data, read in place (never copied): /work/shared/data/paperbench/judge_eval.
JUDGE_EVAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "paperbench" / "judge_eval"
FILES = sorted(JUDGE_EVAL.glob("*.judge_eval.json"))


@pytest.mark.django_db
@pytest.mark.parametrize("path", FILES, ids=[p.name.split(".")[0] for p in FILES])
def test_judge_eval_prints_paperbench_metrics_for_the_stub_judge(stub, path):
    make_endpoint(stub.base_url, name="stub", concurrency=16)
    out = io.StringIO()
    call_command("judge_eval", str(path), "--endpoint", "stub", stdout=out)
    report = json.loads(out.getvalue())
    # What the stub judge says is known in advance, so the metrics can be recomputed here.
    nodes = flatten(json.loads(path.read_text()))
    leaves = [n for n, is_leaf in zip(nodes, leaf_mask(nodes), strict=True) if is_leaf]
    y_true = [n.score for n in leaves]
    y_pred = [stub_score(n.requirements) for n in leaves]
    expected = compute_metrics(y_true, y_pred)
    assert report["leaves"] == len(leaves) and report["invalid_leaves"] == 0
    assert report["overall"]["num_samples"] == len(leaves)
    assert report["overall"]["f1"] == pytest.approx(expected.f1)
    assert report["overall"]["accuracy"] == pytest.approx(expected.accuracy)
    categories = {n.task_category for n in leaves}
    assert set(report["stratified"]) == categories
    for category in categories:
        pairs = [(t, p) for n, t, p in zip(leaves, y_true, y_pred, strict=True) if n.task_category == category]
        per = compute_metrics([t for t, _ in pairs], [p for _, p in pairs])
        assert report["stratified"][category]["f1"] == pytest.approx(per.f1)
    assert report["cost_usd"] > 0


@pytest.mark.django_db
def test_judge_eval_names_an_unknown_endpoint():
    with pytest.raises(CommandError, match="No model endpoint named 'nope'"):
        call_command("judge_eval", str(FILES[0]), "--endpoint", "nope")


@pytest.mark.django_db
def test_judge_eval_refuses_an_endpoint_that_names_a_server_secret_and_sends_nothing(stub):
    make_endpoint(stub.base_url, name="old", api_key_env="SECRET_KEY")  # saved before the rule
    with pytest.raises(CommandError, match=r"\$SECRET_KEY is not an allowed key variable"):
        call_command("judge_eval", str(FILES[0]), "--endpoint", "old")
    assert stub.hits == []
