"""Two curators editing one paper: every edit names the revision it read; a stale one gets 409
with the paper as it is now (API), or comes back with both edits merged (the edit page)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.papers.models import Paper
from apps.papers.services import PaperBundle, import_paper
from tests.factories import make_user
from tests.rubrics.helpers import leaf

pytestmark = pytest.mark.django_db


@pytest.fixture
def curators(personas) -> tuple[Client, Client]:
    """Two curators, each with a client of their own."""
    clients = []
    for user in (personas["curator"], make_user("curator", "curator2")):
        client = Client()
        client.force_login(user)
        clients.append(client)
    return clients[0], clients[1]


def _patch(client: Client, paper: Paper, body: dict, **headers):
    return client.patch(f"/api/papers/{paper.pk}/", body, content_type="application/json", headers=headers)


def test_two_curators_patching_one_paper_the_second_gets_409_with_the_current_paper(curators):
    paper = Paper.objects.create(slug="p", title="Old title", venue="ICML")
    alice, bob = curators
    # Both read, then both write what they read: Bob's write is based on a paper that is gone.
    read_by_alice = alice.get(f"/api/papers/{paper.pk}/").json()
    read_by_bob = bob.get(f"/api/papers/{paper.pk}/").json()
    first = _patch(alice, paper, {"title": "New title", "revision": read_by_alice["revision"]})
    second = _patch(bob, paper, {"venue": "NeurIPS", "revision": read_by_bob["revision"]})
    assert first.status_code == 200 and first.json()["revision"] == read_by_alice["revision"] + 1
    assert second.status_code == 409
    current = second.json()["current"]
    assert (current["title"], current["venue"], current["revision"]) == ("New title", "ICML", first.json()["revision"])
    assert second["ETag"] == f'"{current["revision"]}"'
    paper.refresh_from_db()
    assert (paper.title, paper.venue) == ("New title", "ICML")  # nothing of the refused edit was written
    # Bob, now knowing Alice's edit, sends his again on the current revision: both are kept.
    again = _patch(bob, paper, {"venue": "NeurIPS", "revision": current["revision"]})
    assert again.status_code == 200
    paper.refresh_from_db()
    assert (paper.title, paper.venue) == ("New title", "NeurIPS")


@pytest.mark.django_db(transaction=True)
def test_patches_sent_at_the_same_moment_never_both_succeed(live_server, personas):
    """The issue's trial, against a threaded server: one edit wins, the other is told (409), none vanishes."""
    from apps.core.tokens import create_token

    paper = Paper.objects.create(slug="p", title="t0", venue="v0")
    keys = [create_token(user, "race")[1] for user in (personas["curator"], make_user("curator", "curator2"))]

    def patch(key: str, body: dict, answers: list, start: threading.Barrier) -> None:
        request = urllib.request.Request(
            f"{live_server.url}/api/papers/{paper.pk}/", data=json.dumps(body).encode(), method="PATCH",
            headers={"Authorization": f"Token {key}", "Content-Type": "application/json"})
        start.wait()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answers.append((response.status, body))
        except urllib.error.HTTPError as exc:
            answers.append((exc.code, body))

    for trial in range(5):
        revision = Paper.objects.get(pk=paper.pk).revision
        answers: list = []
        start = threading.Barrier(2)
        threads = [threading.Thread(target=patch, args=(key, body, answers, start)) for key, body in
                   zip(keys, ({"title": f"t{trial + 1}", "revision": revision},
                              {"venue": f"v{trial + 1}", "revision": revision}), strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(status for status, _ in answers) == [200, 409]
        winner = next(body for status, body in answers if status == 200)
        current = Paper.objects.get(pk=paper.pk)
        field = "title" if "title" in winner else "venue"
        assert getattr(current, field) == winner[field] and current.revision == revision + 1


def test_an_edit_that_does_not_say_which_revision_it_read_is_428(curators):
    paper = Paper.objects.create(slug="p", title="T")
    response = _patch(curators[0], paper, {"title": "X"})
    assert response.status_code == 428 and "'revision' field" in response.json()["detail"]
    put = curators[0].put(f"/api/papers/{paper.pk}/", {"slug": "p", "title": "X"}, content_type="application/json")
    assert put.status_code == 428
    assert Paper.objects.get(pk=paper.pk).title == "T"


def test_if_match_with_the_etag_read_stands_for_the_revision(curators):
    paper = Paper.objects.create(slug="p", title="T")
    alice = curators[0]
    tag = alice.get(f"/api/papers/{paper.pk}/")["ETag"]
    assert tag == '"1"'
    assert _patch(alice, paper, {"title": "A"}, **{"If-Match": tag}).status_code == 200
    stale = _patch(alice, paper, {"title": "B"}, **{"If-Match": tag})
    assert stale.status_code == 409 and stale.json()["current"]["title"] == "A"
    assert _patch(alice, paper, {"title": "B"}, **{"If-Match": "yesterday"}).status_code == 400
    both = _patch(alice, paper, {"title": "B", "revision": 2}, **{"If-Match": '"3"'})
    assert both.status_code == 400 and "If-Match says 3" in both.json()["revision"][0]


def test_a_patch_writes_only_the_fields_it_sends(curators):
    paper = Paper.objects.create(slug="p", title="T", markdown="long text")
    with CaptureQueriesContext(connection) as queries:
        assert _patch(curators[0], paper, {"venue": "ICLR", "revision": 1}).status_code == 200
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('UPDATE "papers_paper"')]
    assert len(updates) == 1
    assert '"venue"' in updates[0] and '"revision"' in updates[0]
    assert '"markdown"' not in updates[0] and '"title"' not in updates[0]


def test_an_import_moves_the_revision_on_so_an_edit_read_before_it_is_refused(curators):
    paper = Paper.objects.create(slug="p", title="T")
    read = curators[0].get(f"/api/papers/{paper.pk}/").json()
    bundle = PaperBundle("p", json.dumps(leaf("Reproduce it")).encode(), "p.json", {"paper_md": "# Imported"})
    import_paper(bundle)
    stale = _patch(curators[0], paper, {"title": "X", "revision": read["revision"]})
    assert stale.status_code == 409 and stale.json()["current"]["markdown"] == "# Imported"


# --- the edit page ---------------------------------------------------------------------------


def _shown(response) -> dict[str, str]:
    """What the browser posts back untouched: every field of the edit form as the page shows it."""
    form = response.context["form"]
    values = {field.name: field.value() for field in form if field.name != "pdf_upload"}
    return {name: "" if value is None else str(value) for name, value in values.items()}


def test_a_stale_save_on_the_edit_page_comes_back_with_both_edits_merged(curators):
    paper = Paper.objects.create(slug="p", title="Old", venue="ICML", abstract="old abstract", tags=["rl"])
    alice, bob = curators
    alice_form = _shown(alice.get("/papers/p/edit/"))
    bob_form = _shown(bob.get("/papers/p/edit/"))
    assert bob.post("/papers/p/edit/", {**bob_form, "title": "Bob's title", "venue": "NeurIPS"}).status_code == 302

    mine = {**alice_form, "abstract": "Alice's abstract", "venue": "ICLR", "tags_text": "rl, vision"}
    conflict = alice.post("/papers/p/edit/", mine)
    assert conflict.status_code == 409
    page = conflict.content.decode()
    assert 'data-testid="edit-conflict"' in page and "Their changes to Title are taken in." in page
    again = _shown(conflict)
    # Alice's edits are kept, Bob's title is taken in, and the field both changed shows Bob's value.
    assert (again["title"], again["abstract"], again["venue"], again["tags_text"]) == (
        "Bob's title", "Alice's abstract", "ICLR", "rl, vision")
    assert conflict.context["form"].saved == {"venue": "NeurIPS"}
    assert 'data-testid="saved-venue"' in page
    paper.refresh_from_db()
    assert (paper.title, paper.venue, paper.abstract) == ("Bob's title", "NeurIPS", "old abstract")

    assert alice.post("/papers/p/edit/", again).status_code == 302
    paper.refresh_from_db()
    assert (paper.title, paper.venue, paper.abstract, paper.tags) == (
        "Bob's title", "ICLR", "Alice's abstract", ["rl", "vision"])


def test_a_save_without_the_revision_is_a_form_error(curators):
    Paper.objects.create(slug="p", title="Old")
    form = _shown(curators[0].get("/papers/p/edit/"))
    del form["revision"]
    response = curators[0].post("/papers/p/edit/", {**form, "title": "New"})
    assert response.status_code == 400 and Paper.objects.get(slug="p").title == "Old"


@pytest.mark.django_db(transaction=True)
def test_the_revision_migration_keeps_every_paper_and_starts_it_at_1():
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("papers", "0003_candidates")])
    try:
        old = executor.loader.project_state([("papers", "0003_candidates")]).apps.get_model("papers", "Paper")
        old.objects.create(slug="kept", title="Kept", markdown="# text")
        executor.loader.build_graph()
        executor.migrate([("papers", "0004_paper_revision")])
    finally:
        MigrationExecutor(connection).migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    paper = Paper.objects.get(slug="kept")
    assert (paper.title, paper.markdown, paper.revision) == ("Kept", "# text", 1)
