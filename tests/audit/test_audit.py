"""Comparison, human grading, queues, reports, what-if and exports through the API and the pages."""

from __future__ import annotations

import csv
import io
import json

import pytest

from apps.audit.models import AuditItem
from apps.audit.services.comparison import build_comparison
from apps.audit.services.submissions import submission_key
from apps.judging.models import JudgeRun, LeafGrade
from tests.audit.helpers import leaf_indexes, make_run
from tests.judging.helpers import make_paper_with_rubric

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(personas):
    """One paper, two model judges and a human on submission A, the judges on B and C too."""
    paper, version = make_paper_with_rubric("audit-paper")
    leaves = leaf_indexes(version)  # 5 leaves
    a = {i: 1.0 for i in leaves}
    b = {**a, leaves[0]: 0.0, leaves[4]: None}  # disagrees on leaf 0, invalid on leaf 4
    big = make_run(version, "big-judge", a, submission="submissions/a", cost=2.0)
    cheap = make_run(version, "cheap-judge", b, submission="submissions/a", cost=0.25)
    for name, scores_big, scores_cheap in (("b", {leaves[0]: 1.0}, {leaves[0]: 1.0}),
                                           ("c", {}, {leaves[2]: 1.0})):
        make_run(version, "big-judge", scores_big, submission=f"submissions/{name}", cost=2.0)
        make_run(version, "cheap-judge", scores_cheap, submission=f"submissions/{name}", cost=0.25)
    return {"paper": paper, "version": version, "leaves": leaves, "big": big, "cheap": cheap, **personas}


def test_comparison_puts_sources_side_by_side_and_flags_disagreements(world):
    c = build_comparison([world["big"].pk, world["cheap"].pk])
    leaves = world["leaves"]
    assert [s.label for s in c.sources] == ["big-judge", "cheap-judge"]
    rows = {r["index"]: r for r in c.rows}
    assert rows[leaves[0]]["disagree"] and not rows[leaves[1]]["disagree"]
    assert rows[leaves[4]]["invalid"] and not rows[leaves[4]]["disagree"]  # invalid is not a disagreement
    assert c.disagreements == 1
    # The root and the Data subtree hold the one disagreement; 4 leaves have two valid grades.
    assert (rows[0]["compared_below"], rows[0]["disagree_below"]) == (4, 1)
    assert rows[1]["disagree_below"] == 1 and rows[4]["disagree_below"] == 0
    assert c.sources[0].scores[0] == pytest.approx(1.0)
    assert c.sources[1].scores[0] == pytest.approx(world["cheap"].score)
    metrics = c.metrics[0]["overall"]
    assert (metrics["num_samples"], metrics["disagreements"], metrics["accuracy"]) == (4, 1, 0.75)
    assert c.metrics[0]["skipped"] == 1


def test_compare_page_renders_grid_with_own_column(world, client_for):
    response = client_for("curator").get(f"/audit/compare/?runs={world['big'].pk},{world['cheap'].pk}")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="audit-grid"' in html and html.count('data-testid="my-cell"') == 5
    assert "you (curator)" in html and 'data-disagree="1"' in html
    viewer_html = client_for("viewer").get(f"/audit/compare/?runs={world['big'].pk}").content.decode()
    assert 'data-testid="my-cell"' not in viewer_html and 'data-testid="grade-bar"' not in viewer_html


@pytest.mark.parametrize(("runs", "message"), [
    ("", "Pick at least one run"), ("1,x", "Not a run id"), ("999999", "No judge run with id 999999"),
    (",".join(str(i) for i in range(1, 12)), "at most 8"), (str(10**20), "Not a run id"),
])
def test_bad_run_lists_are_400_with_a_message(world, client_for, runs, message):
    for url in (f"/audit/compare/?runs={runs}", f"/api/audit/compare/?runs={runs}"):
        response = client_for("viewer").get(url)
        assert response.status_code == 400
        assert message in response.content.decode()


def test_runs_of_two_submissions_are_not_compared_leaf_by_leaf(world, client_for):
    from apps.judging.models import JudgeRun

    other = JudgeRun.objects.get(judge_name="big-judge", submission="submissions/b")
    for url in (f"/audit/compare/?runs={world['big'].pk},{other.pk}", f"/api/audit/compare/?runs={world['big'].pk},{other.pk}"):
        response = client_for("viewer").get(url)
        assert response.status_code == 400
        assert "grade different submissions" in response.content.decode() and "submissions/b" in response.content.decode()


def test_runs_of_two_papers_cannot_be_compared(world, client_for):
    _other, version = make_paper_with_rubric("other-paper")
    run = make_run(version, "big-judge", {})
    response = client_for("viewer").get(f"/api/audit/compare/?runs={world['big'].pk},{run.pk}")
    assert response.status_code == 400 and "same paper" in response.json()["detail"][0]


def test_a_human_grade_is_its_own_source_and_never_touches_the_judge(world, client_for):
    leaf = world["leaves"][0]
    client = client_for("curator")
    response = client.post("/api/audit/grades/", {"run": world["cheap"].pk, "node_index": leaf, "score": 1,
                                                  "note": "the loader is there"}, content_type="application/json")
    assert response.status_code == 201, response.content
    body = response.json()
    human = JudgeRun.objects.get(pk=body["human_run"])
    assert human.kind == "human" and human.graded_by == world["curator"] and human.submission == "submissions/a"
    assert body["graded_by"] == "curator" and body["note"] == "the loader is there"
    assert LeafGrade.objects.get(run=world["cheap"], node_index=leaf).score == 0.0  # the judge keeps its grade
    # Saving again updates the same human grade, not a second run.
    client.post("/api/audit/grades/", {"run": world["big"].pk, "node_index": leaf, "score": 0},
                content_type="application/json")
    assert JudgeRun.objects.filter(kind="human", graded_by=world["curator"]).count() == 1
    assert LeafGrade.objects.get(run=human, node_index=leaf).score == 0.0
    human.refresh_from_db()
    assert human.n_leaves == 1 and human.score == 0.0


@pytest.mark.parametrize(("payload", "field"), [
    ({"score": 2}, "score"), ({"score": "yes"}, "score"), ({"score": True}, "score"), ({"node_index": -1}, "node_index"),
    ({"run": 10**20}, "run"), ({"node_index": 10**20}, "detail"), ({"run": "abc"}, "run"), ({"note": ["a"]}, "note"),
    ({"run": 999999}, "run"), ({"note": "x" * 10_001}, "note"),
])
def test_bad_grades_are_400(world, client_for, payload, field):
    data = {"run": world["big"].pk, "node_index": world["leaves"][0], "score": 1, **payload}
    response = client_for("curator").post("/api/audit/grades/", data, content_type="application/json")
    assert response.status_code == 400 and field in response.json()


def test_grading_an_inner_node_or_missing_node_is_400(world, client_for):
    client = client_for("curator")
    for index, message in ((0, "not a leaf"), (500, "no node 500")):
        response = client.post("/api/audit/grades/", {"run": world["big"].pk, "node_index": index, "score": 1},
                               content_type="application/json")
        assert response.status_code == 400 and message in response.json()["detail"][0]


def test_permissions(world, client, client_for):
    grade = {"run": world["big"].pk, "node_index": world["leaves"][0], "score": 1}
    assert client_for("viewer").post("/api/audit/grades/", grade, content_type="application/json").status_code == 403
    assert client_for("operator").post("/api/audit/grades/", grade, content_type="application/json").status_code == 403
    assert client.post("/api/audit/grades/", grade, content_type="application/json").status_code in (401, 403)
    assert client.get("/api/audit/compare/?runs=1").status_code in (401, 403)
    assert client_for("outsider").get(f"/api/audit/compare/?runs={world['big'].pk}").status_code == 403
    for url in ("/audit/", f"/audit/compare/?runs={world['big'].pk}", "/audit/report/", "/audit/what-if/"):
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"]
        assert client_for("outsider").get(url).status_code == 403
        assert client_for("viewer").get(url).status_code == 200
    assert client_for("viewer").post("/audit/queues/", {"runs": "1"}).status_code == 403
    assert client_for("viewer").post("/audit/import/", {}).status_code == 403
    assert not JudgeRun.objects.filter(kind="human").exists()


def test_queue_shares_disagreements_and_tracks_progress(world, client_for):
    from tests.factories import make_user

    second = make_user("curator", "curator2")
    ids = f"{world['big'].pk},{world['cheap'].pk}"
    # Make a second disagreement so both graders get one leaf.
    LeafGrade.objects.filter(run=world["cheap"], node_index=world["leaves"][1]).update(score=0.0)
    response = client_for("admin").post("/api/audit-queues/", {"runs": [world["big"].pk, world["cheap"].pk],
                                                               "assignees": ["curator", "curator2"]},
                                        content_type="application/json")
    assert response.status_code == 201, response.content
    queue_id = response.json()["id"]
    assert {p["user"]: p["total"] for p in response.json()["progress"]} == {"curator": 1, "curator2": 1}
    item = AuditItem.objects.get(queue_id=queue_id, assignee=world["curator"])
    client_for("curator").post("/api/audit/grades/", {"run": world["cheap"].pk, "node_index": item.node_index,
                                                      "score": 1}, content_type="application/json")
    progress = {p["user"]: p for p in client_for("viewer").get(f"/api/audit-queues/{queue_id}/").json()["progress"]}
    assert progress["curator"]["done"] == 1 and progress["curator2"]["done"] == 0
    page = client_for("curator").get(f"/audit/compare/?runs={ids}&queue={queue_id}").content.decode()
    assert page.count('data-assigned="1"') == 1
    assert second.audit_items.count() == 1
    # Nobody who cannot grade is assigned, and agreeing runs make no queue.
    bad = client_for("admin").post("/api/audit-queues/", {"runs": [world["big"].pk, world["cheap"].pk],
                                                          "assignees": ["viewer"]}, content_type="application/json")
    assert bad.status_code == 400 and "may not grade" in bad.json()["detail"][0]
    same = client_for("admin").post("/api/audit-queues/", {"runs": [world["big"].pk, world["big"].pk],
                                                           "assignees": ["curator"]}, content_type="application/json")
    assert same.status_code == 400


@pytest.mark.parametrize(("runs", "message"), [
    (0, "runs must be a list of run ids"), ({"1": 2}, "runs must be a list of run ids"), (["x"], "Not a run id"),
    (None, "may not be null"), ("", "Pick at least one run"),
])
def test_a_queue_with_runs_that_are_not_run_ids_is_a_400(world, client_for, runs, message):
    response = client_for("admin").post("/api/audit-queues/", {"runs": runs, "assignees": []},
                                        content_type="application/json")
    assert response.status_code == 400 and message in response.json()["runs"][0]


def test_open_leaves_are_handed_on_by_the_grader_the_creator_or_an_admin(world, client_for, personas):
    from tests.factories import make_user

    personas.update(curator2=make_user("curator", "curator2"), curator3=make_user("curator", "curator3"))
    leaves = world["leaves"]
    LeafGrade.objects.filter(run=world["cheap"], node_index__in=leaves[1:3]).update(score=0.0)  # 3 disagreements
    runs = [world["big"].pk, world["cheap"].pk]
    created = client_for("admin").post("/api/audit-queues/", {"runs": runs, "assignees": ["curator"]},
                                       content_type="application/json")
    queue_id = created.json()["id"]
    url = f"/api/audit-queues/{queue_id}/reassign/"
    first, second, third = AuditItem.objects.filter(queue_id=queue_id).order_by("node_index")

    def grade(user, item):
        response = client_for(user).post("/api/audit/grades/", {"run": world["cheap"].pk, "node_index": item.node_index,
                                                                "score": 1}, content_type="application/json")
        assert response.status_code in (200, 201), response.content

    grade("curator", first)  # done: stays with curator
    grade("curator3", third)  # graded before it is curator3's: done as soon as it arrives
    moved = client_for("curator").post(url, {"from_user": "curator", "to_users": ["curator2", "curator3"]},
                                       content_type="application/json")
    assert moved.status_code == 200, moved.content
    assert moved.json()["moved"] == 2
    progress = {p["user"]: (p["done"], p["total"]) for p in moved.json()["progress"]}
    assert progress == {"curator": (1, 1), "curator2": (0, 1), "curator3": (1, 1)}
    assert AuditItem.objects.get(pk=second.pk).assignee.username == "curator2"

    def refused(user, body, code):
        response = client_for(user).post(url, body, content_type="application/json")
        assert response.status_code == code, response.content
        return json.dumps(response.json())

    assert "has no open leaves" in refused("curator", {"from_user": "curator", "to_users": ["curator2"]}, 400)
    assert "may not grade: viewer" in refused("admin", {"from_user": "curator2", "to_users": ["viewer"]}, 400)
    assert "both giving and taking" in refused("admin", {"from_user": "curator2", "to_users": ["curator2"]}, 400)
    assert "creator" in refused("curator3", {"from_user": "curator2", "to_users": ["curator3"]}, 403)
    refused("admin", {"from_user": "curator2", "to_users": []}, 400)
    refused("admin", {"from_user": "nobody", "to_users": ["curator"]}, 400)
    refused("viewer", {"from_user": "curator2", "to_users": ["curator"]}, 403)
    assert AuditItem.objects.get(pk=second.pk).assignee.username == "curator2"  # nothing moved by a refusal

    # The page: curator2 sees the form with themself picked; the admin hands curator2's leaf back.
    page = client_for("curator2").get(f"/audit/queues/{queue_id}/").content.decode()
    assert 'data-testid="queue-reassign"' in page and '<option value="curator2" selected>' in page
    assert 'data-testid="queue-reassign"' not in client_for("viewer").get(f"/audit/queues/{queue_id}/").content.decode()
    admin = client_for("admin")
    handed = admin.post(f"/audit/queues/{queue_id}/reassign/", {"from_user": "curator2", "to_users": ["curator"]})
    assert handed.status_code == 302
    assert AuditItem.objects.get(pk=second.pk).assignee.username == "curator"
    assert "1 open leaf of curator2 handed to curator." in admin.get(handed["Location"]).content.decode()
    missing = admin.post(f"/audit/queues/{queue_id}/reassign/", {"from_user": "curator"})
    assert missing.status_code == 400 and "to_users" in missing.content.decode()
    assert client_for("curator3").post(f"/audit/queues/{queue_id}/reassign/", {
        "from_user": "curator", "to_users": ["curator3"]}).status_code == 403


def test_judge_report_api_csv_and_page(world, client_for):
    client = client_for("viewer")
    query = "reference=big-judge&candidate=cheap-judge&metric=kendall&threshold=0.5&n_resamples=200"
    report = client.get(f"/api/audit/report/?{query}").json()
    assert report["n"] == 3
    assert report["cost_per_submission"] == {"reference": 2.0, "candidate": 0.25}
    # Kendall: (a, b) and (a, c) concordant, (b, c) discordant -> 1/3; 3 submissions are too few for a verdict.
    assert report["value"] == pytest.approx(1 / 3) and report["verdict"] == "too few"
    # Root scores a, b, c: big 1.0, 0.167, 0.0; cheap 0.667, 0.167, 0.25 -> b and c swap order.
    assert len(report["flips"]) == 1
    assert [j["judge"] for j in report["landscape"]] == ["cheap-judge"]
    rows = list(csv.reader(io.StringIO(client.get(f"/api/audit/report/?{query}&export=csv").content.decode())))
    assert rows[0][1] == "reference: big-judge" and len(rows) > 4
    page = client.get(f"/audit/report/?{query}")
    assert page.status_code == 200 and 'data-testid="verdict"' in page.content.decode()
    exported = json.loads(client.get(f"/audit/report/export.json?{query}").content)
    assert exported["flips"] == report["flips"]
    assert client.get("/api/audit/report/?reference=big-judge&candidate=big-judge").status_code == 400
    assert client.get("/api/audit/report/?reference=big-judge&candidate=nobody").status_code == 400
    assert client.get("/api/audit/report/?reference=big-judge&candidate=cheap-judge&metric=zz").status_code == 400
    assert client.get("/audit/report/?reference=big-judge&candidate=nobody").status_code == 400


def test_comparison_exports(world, client_for):
    client = client_for("viewer")
    ids = f"{world['big'].pk},{world['cheap'].pk}"
    rows = list(csv.DictReader(io.StringIO(client.get(f"/audit/compare/export.csv?runs={ids}").content.decode())))
    leaf0 = next(r for r in rows if r["index"] == str(world["leaves"][0]))
    assert leaf0["big-judge score"] == "1.0" and leaf0["cheap-judge score"] == "0.0" and leaf0["disagree"] == "1"
    data = client.get(f"/audit/compare/export.json?runs={ids}").json()
    assert [s["label"] for s in data["sources"]] == ["big-judge", "cheap-judge"] and data["disagreements"] == 1
    assert client.get(f"/audit/compare/export.xml?runs={ids}").status_code == 400


def test_csv_export_neutralises_formulas(world, client_for):
    LeafGrade.objects.filter(run=world["big"]).update(explanation="=HYPERLINK(\"http://x\")")
    text = client_for("viewer").get(f"/api/audit/compare/?runs={world['big'].pk}&export=csv").content.decode()
    assert "'=HYPERLINK" in text


def test_csv_export_neutralises_formulas_in_header_cells_too(world, client_for):
    # A judge's name heads its columns; whoever names a judge may make it a formula.
    JudgeRun.objects.filter(pk=world["big"].pk).update(judge_name="=HYPERLINK(\"http://x\",\"y\")")
    for url in (f"/api/audit/compare/?runs={world['big'].pk}&export=csv",
                f"/audit/compare/export.csv?runs={world['big'].pk}"):
        header = next(csv.reader(io.StringIO(client_for("viewer").get(url).content.decode())))
        assert "'=HYPERLINK(\"http://x\",\"y\") score" in header
        assert not any(cell[:1] in ("=", "+", "-", "@") for cell in header)


def test_what_if_shows_rank_changes_under_new_weights(world, client_for):
    from apps.rubrics.services.versions import create_version

    tree = world["version"].tree
    # Data pipeline weight 2 -> 50, Training 3 -> 1: cheap-judge's b (a Data leaf) overtakes c (a Training leaf).
    tree["sub_tasks"][0]["weight"] = 50
    tree["sub_tasks"][1]["weight"] = 1
    create_version(world["paper"], message="heavier data", tree=tree)
    client = client_for("viewer")
    result = client.get(f"/api/audit/what-if/?paper={world['paper'].slug}&version=2").json()
    assert result["runs"] == 6 and result["tree"] == "v2"
    cheap = next(j for j in result["judges"] if j["judge"] == "cheap-judge")
    by_sub = {r["submission"].split(" · ")[1]: r for r in cheap["rows"]}
    assert (by_sub["submissions/b"]["old_rank"], by_sub["submissions/b"]["new_rank"]) == (3, 2)
    assert by_sub["submissions/b"]["new"] == pytest.approx(25 / 52)
    assert (by_sub["submissions/c"]["old_rank"], by_sub["submissions/c"]["new_rank"]) == (2, 3)
    assert cheap["changed"] == 2 and result["rank_changes"] == 2  # big-judge keeps its order
    assert all(r["old"] == pytest.approx(JudgeRun.objects.get(pk=r["run"]).score) for r in cheap["rows"])
    page = client.get(f"/audit/what-if/?paper={world['paper'].slug}&version=2")
    assert page.status_code == 200 and 'data-testid="what-if-summary"' in page.content.decode()
    # Without a draft the page starts from the latest version.
    default = client.get(f"/audit/what-if/?paper={world['paper'].slug}").content.decode()
    assert "<strong>2</strong> submissions change rank under v2" in default
    assert client.get(f"/api/audit/what-if/?paper={world['paper'].slug}&version=9").status_code == 400
    assert client.get(f"/audit/what-if/?paper={world['paper'].slug}&version=x").status_code == 400
    posted = client.post("/api/audit/what-if/", {"paper": world["paper"].slug, "tree": tree},
                         content_type="application/json")
    assert posted.status_code == 200 and posted.json()["tree"] == "posted tree"


def test_judge_and_rubric_text_is_escaped_in_the_grid(world, client_for):
    LeafGrade.objects.filter(run=world["big"]).update(explanation='<script>alert(1)</script>"quoted"',
                                                      invalid_reason="<b>x</b>")
    LeafGrade.objects.filter(run=world["cheap"], node_index=world["leaves"][4]).update(invalid_reason="<img src=x>")
    html = client_for("curator").get(f"/audit/compare/?runs={world['big'].pk},{world['cheap'].pk}").content.decode()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;&quot;quoted&quot;" in html
    assert "<img src=x>" not in html and "&lt;img src=x&gt;" in html


def test_a_run_without_trajectory_or_folder_gets_one_human_run_beside_it(world, client_for):
    lone = make_run(world["version"], "lone-judge", {world["leaves"][0]: 1.0})
    client = client_for("curator")
    for leaf in world["leaves"][:2]:
        response = client.post("/api/audit/grades/", {"run": lone.pk, "node_index": leaf, "score": 1},
                               content_type="application/json")
        assert response.status_code == 201
    human = JudgeRun.objects.get(kind="human")
    assert human.grades.count() == 2 and submission_key(human) == submission_key(lone)
    sources = build_comparison([lone.pk], world["curator"], with_own=True).sources
    assert [s.mine for s in sources] == [False, True] and sources[1].graded == 2


def test_pages_pick_runs_and_create_a_queue(world, client_for):
    client = client_for("curator")
    home = client.get(f"/audit/?paper={world['paper'].slug}").content.decode()
    assert f'data-testid="pick-run-{world["big"].pk}"' in home and "submissions/a" in home
    ids = f"{world['big'].pk},{world['cheap'].pk}"
    response = client.post("/audit/queues/", {"runs": ids, "assignees": ["curator"], "name": "check leaf 1.1"})
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "check leaf 1.1" in page and 'data-testid="queue-items"' in page and "<td>curator</td>" in page
    # Repeated ?runs= (the picker's checkboxes) works like runs=a,b.
    picked = client.get(f"/audit/compare/?runs={world['big'].pk}&runs={world['cheap'].pk}")
    assert picked.status_code == 200 and "cheap-judge" in picked.content.decode()
    missing = client.post("/audit/queues/", {"runs": ids})
    assert missing.status_code == 400 and "assignees" in missing.content.decode()


def _grade(client, run, leaf, score, note=""):
    return client.post("/api/audit/grades/", {"run": run.pk, "node_index": leaf, "score": score, "note": note},
                       content_type="application/json")


def _undo(client, run, leaf, saved, previous):
    return client.post("/api/audit/grades/undo/", {"run": run.pk, "node_index": leaf, "saved": saved,
                                                   "previous": previous}, content_type="application/json")


def test_undo_of_a_first_grade_removes_it_and_reopens_the_queue_leaf(world, client_for):
    leaf = world["leaves"][0]  # where the judges disagree: a queue leaf
    client = client_for("curator")
    queue = client.post("/api/audit-queues/", {"runs": [world["big"].pk, world["cheap"].pk],
                                               "assignees": ["curator"]}, content_type="application/json").json()
    saved = _grade(client, world["cheap"], leaf, 1, "seen").json()
    assert AuditItem.objects.get(queue_id=queue["id"]).done_at is not None
    undone = _undo(client, world["cheap"], leaf, {"score": 1, "note": "seen"}, None)
    assert undone.status_code == 200 and undone.json()["removed"] is True
    human = JudgeRun.objects.get(pk=saved["human_run"])
    assert not human.grades.exists() and human.n_leaves == 0
    assert AuditItem.objects.get(queue_id=queue["id"]).done_at is None


def test_undo_puts_the_previous_grade_back_unless_it_changed_meanwhile(world, client_for):
    leaf = world["leaves"][1]
    client = client_for("curator")
    _grade(client, world["big"], leaf, 1, "first look")
    _grade(client, world["big"], leaf, 0, "second look")
    back = _undo(client, world["big"], leaf, {"score": 0, "note": "second look"}, {"score": 1, "note": "first look"})
    assert back.status_code == 200 and (back.json()["score"], back.json()["note"]) == (1.0, "first look")
    # Another tab graded it again: an undo of the older save changes nothing.
    _grade(client, world["big"], leaf, 0, "third look")
    stale = _undo(client, world["big"], leaf, {"score": 1, "note": "first look"}, None)
    assert stale.status_code == 409 and "changed since" in stale.json()["detail"]
    assert LeafGrade.objects.get(run__graded_by=world["curator"], node_index=leaf).explanation == "third look"
    assert _undo(client_for("viewer"), world["big"], leaf, {"score": 0, "note": ""}, None).status_code == 403


def test_the_agreement_table_alone_for_the_compare_page(world, client_for):
    client = client_for("curator")
    _grade(client, world["big"], world["leaves"][0], 0)
    html = client.get(f"/audit/compare/metrics/?runs={world['big'].pk},{world['cheap'].pk}").content.decode()
    assert 'id="pair-metrics"' in html and "you (curator)" in html and "<html" not in html
    assert client.get("/audit/compare/metrics/?runs=x").status_code == 400


def test_what_if_counts_leaves_without_a_grade_separately_from_new_leaves(world, client_for):
    result = client_for("viewer").get(f"/api/audit/what-if/?paper={world['paper'].slug}&version=1").json()
    rows = {(r["judge"], r["submission"].split(" · ")[1]): r for j in result["judges"] for r in j["rows"]}
    # 5 leaves: cheap-judge on a is invalid on one; big-judge on c graded none; nothing is new.
    assert rows[("cheap-judge", "submissions/a")]["ungraded_leaves"] == 1
    assert rows[("big-judge", "submissions/c")]["ungraded_leaves"] == 5
    assert {r["unmatched_leaves"] for r in rows.values()} == {0}
