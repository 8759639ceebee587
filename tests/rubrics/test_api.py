from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.test import override_settings

from apps.papers.models import Paper
from apps.rubrics.models import RubricNode
from apps.rubrics.services.editor import draft_stamp
from apps.rubrics.services.edits import add_node, delete_subtree, move_node, update_node
from apps.rubrics.services.store import export_draft, load_draft
from tests.rubrics.helpers import SAMPLES, inner, leaf, make_paper, pk_of

pytestmark = pytest.mark.django_db


def _zip(files: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    buffer.seek(0)
    buffer.name = "paper.zip"
    return buffer


def _patch(client, pk: int, body: dict):
    return client.patch(f"/api/rubric-nodes/{pk}/", body, content_type="application/json")


# --- node edits --------------------------------------------------------------------------------


def test_a_curator_edits_a_node_and_gets_its_new_version(client_for):
    paper = make_paper()
    response = _patch(client_for("curator"), pk_of(paper, "b"), {"version": 1, "requirements": "Better"})
    assert response.status_code == 200
    assert response.json()["version"] == 2 and response.json()["requirements"] == "Better"


def test_a_stale_edit_gets_409_with_the_current_value(client_for):
    paper = make_paper()
    pk = pk_of(paper, "b")
    first, second = client_for("curator"), client_for("admin")
    assert _patch(first, pk, {"version": 1, "requirements": "Mine"}).status_code == 200
    response = _patch(second, pk, {"version": 1, "requirements": "Theirs"})
    assert response.status_code == 409
    assert response.json()["current"]["requirements"] == "Mine" and response.json()["current"]["version"] == 2
    assert RubricNode.objects.get(pk=pk).requirements == "Mine"


def test_a_patch_without_a_version_is_a_400(client_for):
    paper = make_paper()
    response = _patch(client_for("curator"), pk_of(paper, "b"), {"requirements": "x"})
    assert response.status_code == 400 and "version" in response.json()


def test_a_bad_category_is_a_400(client_for):
    paper = make_paper()
    response = _patch(client_for("curator"), pk_of(paper, "b"), {"version": 1, "task_category": "Cooking"})
    assert response.status_code == 400


def test_create_adds_a_child_at_a_position(client_for):
    paper = make_paper()
    response = client_for("curator").post("/api/rubric-nodes/", {"parent": pk_of(paper, "a"), "position": 0,
                                                                 "requirements": "New first"},
                                          content_type="application/json")
    assert response.status_code == 201
    assert export_draft(paper)["sub_tasks"][0]["sub_tasks"][0]["requirements"] == "New first"


def test_delete_returns_the_subtree_and_create_with_it_puts_it_back(client_for):
    paper = make_paper()
    client = client_for("curator")
    before = json.dumps(export_draft(paper))
    removed = client.delete(f"/api/rubric-nodes/{pk_of(paper, 'a')}/?version=1").json()
    assert len(removed["pks"]) == 3
    body = {"parent": removed["parent"], "position": removed["position"], "subtree": removed["subtree"]}
    restored = client.post("/api/rubric-nodes/", body, content_type="application/json")
    assert restored.status_code == 201 and len(restored.json()["nodes"]) == 3
    assert json.dumps(export_draft(paper)) == before


def test_a_stale_delete_gets_409(client_for):
    paper = make_paper()
    response = client_for("curator").delete(f"/api/rubric-nodes/{pk_of(paper, 'a')}/?version=7")
    assert response.status_code == 409 and RubricNode.objects.filter(node_id="a").exists()


def test_move_into_own_subtree_is_a_400(client_for):
    paper = make_paper()
    response = client_for("curator").post(f"/api/rubric-nodes/{pk_of(paper, 'a')}/move/",
                                          {"version": 1, "parent": pk_of(paper, "a1")},
                                          content_type="application/json")
    assert response.status_code == 400 and "own subtree" in response.json()["detail"]


def test_move_puts_a_node_under_a_new_parent(client_for):
    paper = make_paper()
    response = client_for("curator").post(f"/api/rubric-nodes/{pk_of(paper, 'b')}/move/",
                                          {"version": 1, "parent": pk_of(paper, "c"), "position": 1},
                                          content_type="application/json")
    assert response.status_code == 200 and response.json()["parent"] == pk_of(paper, "c")


def test_duplicate_answers_the_new_rows(client_for):
    paper = make_paper()
    response = client_for("curator").post(f"/api/rubric-nodes/{pk_of(paper, 'c')}/duplicate/")
    assert response.status_code == 201 and len(response.json()["nodes"]) == 2


def test_answers_to_changes_of_weights_or_shape_carry_every_nodes_share(client_for):
    paper = make_paper()
    client = client_for("curator")
    a, b, c = (pk_of(paper, n) for n in ("a", "b", "c"))
    assert "shares" not in _patch(client, b, {"version": 1, "requirements": "Reworded"}).json()
    weighed = _patch(client, b, {"version": 2, "weight": 2}).json()["shares"]
    assert weighed[str(b)] == pytest.approx(0.4) and weighed[str(pk_of(paper, "a2"))] == pytest.approx(0.4 * 3 / 4)
    added = client.post("/api/rubric-nodes/", {"parent": c, "requirements": "More"}, content_type="application/json")
    assert added.json()["shares"][str(pk_of(paper, "c1"))] == pytest.approx(0.1)
    moved = client.post(f"/api/rubric-nodes/{b}/move/", {"version": 3, "parent": a}, content_type="application/json")
    assert moved.json()["shares"][str(b)] == pytest.approx(2 / 3 * 2 / 6)
    removed = client.delete(f"/api/rubric-nodes/{c}/?version=2").json()["shares"]
    assert removed[str(a)] == 1.0 and str(c) not in removed
    copied = client.post(f"/api/rubric-nodes/{b}/duplicate/").json()
    assert copied["shares"][str(copied["nodes"][0]["pk"])] == pytest.approx(2 / 8)


def test_editing_a_node_that_was_deleted_is_a_404(client_for):
    paper = make_paper()
    pk = pk_of(paper, "b")
    delete_subtree(paper, pk, None)
    assert _patch(client_for("curator"), pk, {"version": 1, "weight": 2}).status_code == 404


# --- tree, versions, diff, restore ---------------------------------------------------------------


def test_the_draft_endpoint_gives_flat_nodes_with_shares_and_problems(client_for):
    paper = make_paper()
    body = client_for("viewer").get(f"/api/papers/{paper.pk}/draft/").json()
    assert [n["id"] for n in body["nodes"]][:3] == ["root", "a", "a1"] and body["problems"] == []
    assert body["nodes"][0]["share"] == 1.0


def test_save_version_diff_and_restore_through_the_api(client_for):
    paper = make_paper()
    client = client_for("curator")
    _patch(client, pk_of(paper, "b"), {"version": 1, "weight": 3})
    saved = client.post(f"/api/papers/{paper.pk}/versions/", {"message": "b heavier"},
                        content_type="application/json")
    assert saved.status_code == 201 and saved.json()["number"] == 2
    listed = client.get(f"/api/papers/{paper.pk}/versions/").json()
    assert [v["number"] for v in listed] == [2, 1] and listed[0]["message"] == "b heavier"
    diff = client.get(f"/api/papers/{paper.pk}/versions/diff/?a=1&b=2").json()
    assert diff["changed"] == [{"id": "b", "path": "root > 2 Leaf b is done", "field": "weight", "old": 1, "new": 3}]
    restored = client.post(f"/api/papers/{paper.pk}/versions/1/restore/")
    assert restored.status_code == 201 and restored.json()["number"] == 3
    assert client.get(f"/api/papers/{paper.pk}/versions/diff/?a=1&b=draft").json()["summary"]["changed"] == 0


def test_restore_over_unsaved_draft_edits_is_a_409_until_the_client_chooses(client_for):
    paper = make_paper()
    client = client_for("curator")
    _patch(client, pk_of(paper, "b"), {"version": 1, "weight": 3})
    url = f"/api/papers/{paper.pk}/versions/1/restore/"
    asked = client.post(url)
    assert asked.status_code == 409 and asked.json()["latest_version"] == 1
    assert "draft=keep" in asked.json()["detail"]
    stale = client.post(url, {"draft": "discard", "draft_hash": "0" * 64}, content_type="application/json")
    assert stale.status_code == 409 and paper.rubric_versions.count() == 1
    done = client.post(url, {"draft": "discard", "draft_hash": asked.json()["draft_hash"]},
                       content_type="application/json")
    assert done.status_code == 201 and done.json()["number"] == 2 and done.json()["kept_version"] is None
    assert RubricNode.objects.get(paper=paper, node_id="b").weight == 1


def test_bulk_update_sets_several_nodes_or_none(client_for):
    paper = make_paper()
    client = client_for("curator")
    edits = [{"pk": pk_of(paper, "a1"), "version": 1, "task_category": "Result Analysis"},
             {"pk": pk_of(paper, "a2"), "version": 1, "task_category": "Result Analysis"}]
    response = client.post("/api/rubric-nodes/bulk-update/", {"edits": edits}, content_type="application/json")
    assert response.status_code == 200
    assert [(n["id"], n["task_category"], n["version"]) for n in response.json()["nodes"]] == [
        ("a1", "Result Analysis", 2), ("a2", "Result Analysis", 2)]
    stale = client.post("/api/rubric-nodes/bulk-update/", {"edits": [{**edits[0], "task_category": None}]},
                        content_type="application/json")
    assert stale.status_code == 409 and stale.json()["current"]["version"] == 2
    assert client_for("viewer").post("/api/rubric-nodes/bulk-update/", {"edits": edits},
                                     content_type="application/json").status_code == 403
    assert client_for("curator").post("/api/rubric-nodes/bulk-update/", {"edits": []},
                                      content_type="application/json").status_code == 400


def test_saving_a_version_with_errors_is_a_400_listing_them(client_for):
    paper = make_paper()
    client = client_for("curator")
    _patch(client, pk_of(paper, "b"), {"version": 1, "requirements": ""})
    response = client.post(f"/api/papers/{paper.pk}/versions/", {"message": "x"}, content_type="application/json")
    assert response.status_code == 400 and response.json()["problems"][0]["code"] == "empty_requirements"


def test_an_unknown_version_is_a_404(client_for):
    paper = make_paper()
    assert client_for("viewer").get(f"/api/papers/{paper.pk}/tree/?version=9").status_code == 404


# --- import / export ----------------------------------------------------------------------------


def test_zip_upload_imports_a_paper_folder(client_for):
    upload = _zip({
        "bam/rubric.json": (SAMPLES / "rubrics" / "bam.rubric.json").read_bytes(),
        "bam/config.yaml": (SAMPLES / "rubrics" / "bam.config.yaml").read_bytes(),
        "bam/paper.md": b"# Batch and match\n\n$x^2$",
    })
    response = client_for("curator").post("/api/papers/import/", {"file": upload})
    assert response.status_code == 201, response.content
    assert response.json()["slug"] == "bam" and response.json()["node_count"] == 1021
    assert Paper.objects.get(slug="bam").markdown.startswith("# Batch")


def test_invalid_json_upload_is_a_400_with_the_reason(client_for):
    upload = io.BytesIO(b'{"id": ')
    upload.name = "broken.json"
    response = client_for("curator").post("/api/papers/import/", {"file": upload})
    assert response.status_code == 400 and "Invalid JSON" in response.json()["detail"]
    assert not Paper.objects.exists()


def test_a_zip_without_rubric_json_is_a_400(client_for):
    response = client_for("curator").post("/api/papers/import/", {"file": _zip({"paper.md": b"# x"})})
    assert response.status_code == 400 and "no rubric.json" in response.json()["detail"]


def test_a_file_that_is_not_a_zip_is_a_400(client_for):
    upload = io.BytesIO(b"not a zip")
    upload.name = "paper.zip"
    assert client_for("curator").post("/api/papers/import/", {"file": upload}).status_code == 400


@override_settings(KLONG_MAX_UPLOAD_BYTES=2048)
def test_an_oversized_upload_is_a_413(client_for):
    upload = _zip({"rubric.json": b" " * 10_000 + json.dumps(leaf("x")).encode()})
    upload = io.BytesIO(upload.getvalue() + b"\0" * 4096)
    upload.name = "big.zip"
    response = client_for("curator").post("/api/papers/import/", {"file": upload})
    assert response.status_code == 413 and "limit" in response.json()["detail"]


@override_settings(KLONG_MAX_UPLOAD_BYTES=4096)
def test_a_zip_that_expands_beyond_the_limit_is_a_413(client_for):
    upload = _zip({"rubric.json": b" " * 100_000 + json.dumps(leaf("x")).encode()})
    response = client_for("curator").post("/api/papers/import/", {"file": upload})
    assert response.status_code == 413


def test_an_invalid_tree_upload_lists_every_problem_and_stores_nothing(client_for):
    tree = inner("root", [leaf("a", weight=-1), leaf("b", category="Cooking")])
    upload = _zip({"p/rubric.json": json.dumps(tree).encode()})
    response = client_for("curator").post("/api/papers/import/", {"file": upload})
    assert response.status_code == 400
    assert sorted(p["code"] for p in response.json()["problems"]) == ["negative_weight", "unknown_task_category"]
    assert not Paper.objects.exists() and not RubricNode.objects.exists()


def test_export_answers_a_zip_of_the_paper_folder(client_for):
    paper = make_paper()
    response = client_for("viewer").get(f"/api/papers/{paper.pk}/export/")
    assert response["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    assert sorted(names) == ["paper/blacklist.txt", "paper/config.yaml", "paper/rubric.json"]


# --- papers CRUD ----------------------------------------------------------------------------------


def test_a_curator_creates_and_edits_a_paper(client_for):
    client = client_for("curator")
    created = client.post("/api/papers/", {"slug": "new", "title": "New", "tags": ["x"]},
                          content_type="application/json")
    assert created.status_code == 201
    pk = created.json()["id"]
    edited = client.patch(f"/api/papers/{pk}/", {"split": "eval", "revision": created.json()["revision"]},
                          content_type="application/json")
    assert edited.status_code == 200 and Paper.objects.get(pk=pk).split == "eval"


def test_paper_list_filters_by_search_and_split(client_for):
    Paper.objects.create(slug="alpha", title="Alpha", split="eval")
    Paper.objects.create(slug="beta", title="Beta")
    client = client_for("viewer")
    assert [p["slug"] for p in client.get("/api/papers/?q=alp").json()["results"]] == ["alpha"]
    assert [p["slug"] for p in client.get("/api/papers/?split=train").json()["results"]] == ["beta"]


# --- permissions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role, expected", [("viewer", 403), ("operator", 403), ("outsider", 403)])
def test_only_curators_and_admins_edit_nodes(client_for, role, expected):
    paper = make_paper()
    assert _patch(client_for(role), pk_of(paper, "b"), {"version": 1, "weight": 2}).status_code == expected


def test_anonymous_api_calls_get_401(client):
    paper = make_paper()
    assert client.get(f"/api/papers/{paper.pk}/tree/").status_code == 401
    assert _patch(client, pk_of(paper, "b"), {"version": 1, "weight": 2}).status_code == 401


def test_an_outsider_cannot_read_trees(client_for):
    paper = make_paper()
    assert client_for("outsider").get(f"/api/papers/{paper.pk}/tree/").status_code == 403


@pytest.mark.parametrize("path", ["versions/", "versions/1/restore/"])
def test_a_viewer_cannot_save_or_restore_versions(client_for, path):
    paper = make_paper()
    assert client_for("viewer").post(f"/api/papers/{paper.pk}/{path}").status_code == 403


def test_a_viewer_cannot_import(client_for):
    upload = _zip({"rubric.json": json.dumps(leaf("x")).encode()})
    assert client_for("viewer").post("/api/papers/import/", {"file": upload}).status_code == 403


def test_an_operator_cannot_create_papers(client_for):
    response = client_for("operator").post("/api/papers/", {"slug": "x", "title": "X"},
                                           content_type="application/json")
    assert response.status_code == 403


def test_the_openapi_schema_still_generates(client_for):
    response = client_for("viewer").get("/api/schema/")
    assert response.status_code == 200 and b"/api/rubric-nodes/{id}/move/" in response.content


def test_the_draft_stamp_changes_with_every_kind_of_write(client_for):
    paper = make_paper()
    client = client_for("viewer")

    def stamp() -> str:
        return client.get(f"/api/papers/{paper.pk}/stamp/").json()["stamp"]

    seen = {stamp()}
    update_node(paper, pk_of(paper, "b"), 1, {"weight": 2})
    seen.add(stamp())
    node = add_node(paper, pk_of(paper, "c"))
    seen.add(stamp())
    move_node(paper, node.pk, None, pk_of(paper, "a"))
    seen.add(stamp())
    delete_subtree(paper, node.pk, None)
    seen.add(stamp())
    assert len(seen) == 5
    assert stamp() == draft_stamp(load_draft(paper))
