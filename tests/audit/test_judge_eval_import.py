"""PaperBench JudgeEval human-graded trees imported as human gradings (the real shared files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.judging.models import JudgeRun
from apps.papers.models import Paper
from apps.rubrics.paperbench import flatten, leaf_mask
from apps.rubrics.scoring import graded_leaf_scores, score_graded, score_tree

pytestmark = pytest.mark.django_db

DATA = Path("/work/shared/data/paperbench")
if not DATA.exists():  # the checkout's own copy, where the shared folder is not mounted
    DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "paperbench"


def judge_eval_bytes(slug: str) -> bytes:
    return (DATA / "judge_eval" / f"{slug}.judge_eval.json").read_bytes()


def paper_with_rubric(slug: str) -> Paper:
    from apps.rubrics.services.parsing import parse_rubric
    from apps.rubrics.services.versions import import_rubric_tree

    paper = Paper.objects.create(slug=slug, title=slug)
    import_rubric_tree(paper, parse_rubric((DATA / "rubrics" / f"{slug}.rubric.json").read_bytes()))
    return paper


def upload(client, slug: str, data: bytes, name: str = "graded.judge_eval.json"):
    return client.post("/api/audit/import-judge-eval/", {"paper": slug, "file": SimpleUploadedFile(name, data)})


def test_all_in_one_matches_every_leaf_by_id(client_for):
    paper = paper_with_rubric("all-in-one")
    data = judge_eval_bytes("all-in-one")
    response = upload(client_for("curator"), paper.slug, data)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["match"] == {"matched": 174, "by_id": 174, "by_text": 0, "unmatched_source": 0, "unmatched_target": 0}
    run = JudgeRun.objects.get(pk=body["run"])
    assert run.kind == "human" and run.grades.count() == 174 and run.n_leaves == 174
    assert not body["created_version"]
    # The file's leaf grades land on the same pre-order leaves of the paper's rubric (whose weights
    # differ from the file's in 19 places), so the root is re-scored with the rubric's weights.
    graded = json.loads(data)
    expected = score_tree(flatten(json.loads((DATA / "rubrics" / "all-in-one.rubric.json").read_bytes())),
                          graded_leaf_scores(flatten(graded)))[0]
    assert run.score == pytest.approx(expected)
    assert run.score != pytest.approx(score_graded(graded).root_score)


def test_semantic_self_consistency_reports_the_two_leaves_the_rubric_lost(client_for):
    paper = paper_with_rubric("semantic-self-consistency")
    body = upload(client_for("curator"), paper.slug, judge_eval_bytes("semantic-self-consistency")).json()
    assert body["match"]["matched"] == 77 and body["match"]["by_id"] == 77
    assert body["match"]["unmatched_source"] == 2 and len(body["unmatched"]) == 2


def test_paper_without_rubric_gets_the_files_tree_as_version_one(client_for):
    paper = Paper.objects.create(slug="stay-on-topic", title="Stay on topic")
    data = judge_eval_bytes("stay-on-topic-with-classifier-free-guidance")
    leaves = sum(leaf_mask(flatten(json.loads(data))))
    body = upload(client_for("curator"), paper.slug, data).json()
    assert body["created_version"] and body["rubric_version"] == 1
    assert body["match"]["matched"] == leaves == 116
    version = paper.rubric_versions.get()
    assert version.leaf_count == 116 and "score" not in version.tree  # grades stripped from the rubric


def test_leaves_with_new_ids_match_by_requirement_text(client_for):
    paper = paper_with_rubric("all-in-one")
    tree = json.loads(judge_eval_bytes("all-in-one"))
    renamed = 0
    stack = [tree]
    while stack:
        node = stack.pop()
        if not node["sub_tasks"] and renamed < 20:
            node["id"] = f"renamed-{renamed}"
            renamed += 1
        stack.extend(node["sub_tasks"])
    body = upload(client_for("curator"), paper.slug, json.dumps(tree).encode()).json()
    assert body["match"]["matched"] == 174
    assert (body["match"]["by_id"], body["match"]["by_text"]) == (154, 20)


def test_import_page_redirects_with_a_summary(client_for):
    paper = paper_with_rubric("semantic-self-consistency")
    response = client_for("curator").post("/audit/import/", {
        "paper": paper.slug, "file": SimpleUploadedFile("s.judge_eval.json", judge_eval_bytes("semantic-self-consistency")),
    }, follow=True)
    assert response.status_code == 200
    assert "Imported 77 human leaf grades (77 by id, 0 by requirement text)" in response.content.decode()


@pytest.mark.parametrize(("data", "message"), [
    (b"{not json", "Not a PaperBench graded tree"),
    (json.dumps({"id": "r", "requirements": "x", "weight": 1, "sub_tasks": [
        {"id": "a", "requirements": "y", "weight": 1, "sub_tasks": [], "task_category": "Code Development"}]}).encode(),
     "no human score"),
    (json.dumps({"id": "r", "requirements": "x", "weight": 1, "sub_tasks": [
        {"id": "zz", "requirements": "nothing like it", "weight": 1, "sub_tasks": [], "score": 1.0,
         "task_category": "Code Development"}]}).encode(), "No leaf of the file matches"),
])
def test_bad_files_are_400_and_store_nothing(client_for, data, message):
    paper = paper_with_rubric("semantic-self-consistency")
    response = upload(client_for("curator"), paper.slug, data)
    assert response.status_code == 400 and message in response.json()["detail"][0]
    page = client_for("curator").post("/audit/import/", {"paper": paper.slug, "file": SimpleUploadedFile("x.json", data)})
    assert page.status_code == 400 and message in page.content.decode()
    assert not JudgeRun.objects.exists()


def test_viewer_cannot_import(client_for):
    paper = paper_with_rubric("semantic-self-consistency")
    assert upload(client_for("viewer"), paper.slug, judge_eval_bytes("semantic-self-consistency")).status_code == 403
    assert upload(client_for("curator"), "no-such-paper", b"{}").status_code == 400


def test_management_command_imports_and_reports_errors():
    import io

    from django.core.management import CommandError, call_command

    Paper.objects.create(slug="stay-on-topic", title="Stay on topic")
    out = io.StringIO()
    call_command("import_judge_eval", "stay-on-topic",
                 str(DATA / "judge_eval" / "stay-on-topic-with-classifier-free-guidance.judge_eval.json"), stdout=out)
    assert json.loads(out.getvalue())["match"]["matched"] == 116
    with pytest.raises(CommandError, match="No paper"):
        call_command("import_judge_eval", "nope", "x.json")
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_judge_eval", "stay-on-topic", "/nonexistent/x.json")


def test_an_oversized_file_is_refused_before_it_is_read(client_for, settings):
    paper = paper_with_rubric("semantic-self-consistency")
    settings.KLONG_MAX_UPLOAD_BYTES = 1024
    response = upload(client_for("curator"), paper.slug, judge_eval_bytes("semantic-self-consistency"))
    assert response.status_code == 400 and "larger than 1024 bytes" in response.json()["detail"][0]
    assert not JudgeRun.objects.exists()
