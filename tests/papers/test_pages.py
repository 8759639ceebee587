from __future__ import annotations

import io
import json
import zipfile
from html.parser import HTMLParser

import pytest

from apps.papers.models import Paper
from apps.rubrics.services.edits import delete_subtree, update_node
from apps.rubrics.services.versions import create_version
from tests.rubrics.helpers import inner, leaf, make_paper, pk_of

pytestmark = pytest.mark.django_db


def _zip(files: dict[str, bytes], name: str = "paper.zip") -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    buffer.seek(0)
    buffer.name = name
    return buffer


def test_the_paper_list_filters_by_status_and_tag(client_for):
    Paper.objects.create(slug="a", title="Alpha", status="curated", tags=["vision"])
    Paper.objects.create(slug="b", title="Beta", tags=["nlp"])
    client = client_for("viewer")
    assert [p.slug for p in client.get("/papers/?status=curated").context["page"]] == ["a"]
    assert [p.slug for p in client.get("/papers/?tag=nlp").context["page"]] == ["b"]


def test_paper_markdown_is_sanitised_and_maths_is_shown_as_written(client_for):
    paper = make_paper()
    paper.markdown = "# Method\n\nWe minimise $a_1 * b_2 < c$.\n\n<script>alert(1)</script><img src=x onerror=alert(2)>"
    paper.save()
    html = client_for("viewer").get(f"/papers/{paper.slug}/").content.decode()
    assert "<h1>Method</h1>" in html
    assert '<span class="math">$a_1 * b_2 &lt; c$</span>' in html
    assert "<script>alert(1)" not in html and "onerror" not in html


def _elements(html: str) -> list[tuple[str, dict[str, str | None]]]:
    """Every start tag of an HTML fragment with its attributes, as a browser would read them."""
    found: list[tuple[str, dict[str, str | None]]] = []

    class Collector(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, dict(attrs)))

    Collector().feed(html)
    return found


def test_maths_in_a_link_title_or_an_image_text_keeps_the_markup_whole(client_for):
    paper = make_paper()
    paper.markdown = '[the code](https://example.org/code "see $x_1$")\n\n![plot of $y^2$](https://example.org/p.png)'
    paper.save()
    html = client_for("viewer").get(f"/papers/{paper.slug}/").context["paper_html"]
    links = [attrs for tag, attrs in _elements(html) if tag == "a"]
    assert [link["href"] for link in links] == ["https://example.org/code", "https://example.org/p.png"]
    assert links[0]["title"] == "see $x_1$"
    assert all(link["rel"] == "noopener noreferrer nofollow" for link in links)
    assert '[image: plot of <span class="math">$y^2$</span>]</a>' in html


def test_paper_text_makes_the_browser_fetch_nothing_by_itself(client_for):
    paper = make_paper()
    paper.markdown = "<img src=x>\n\n![token](/api/tokens/)\n\n<p><img src='/admin/'></p>"
    paper.addendum = "![a](https://tracker.example/pixel.gif)"
    paper.save()
    context = client_for("viewer").get(f"/papers/{paper.slug}/").context
    for html in (context["paper_html"], context["addendum_html"]):
        assert all("src" not in attrs for _tag, attrs in _elements(html)), html
    links = [attrs for tag, attrs in _elements(context["paper_html"]) if tag == "a"]
    assert links == [{"href": "/api/tokens/", "rel": "noopener noreferrer nofollow"}]


def test_paper_text_that_spells_a_maths_placeholder_is_shown_as_written(client_for):
    paper = make_paper()
    paper.markdown = "KLONGMATH7X and KLONGMATH0X beside $a$"
    paper.save()
    response = client_for("viewer").get(f"/papers/{paper.slug}/")
    assert response.status_code == 200
    assert 'KLONGMATH7X and KLONGMATH0X beside <span class="math">$a$</span>' in response.context["paper_html"]


def test_the_paper_page_summarises_the_rubric(client_for):
    paper = make_paper()
    response = client_for("viewer").get(f"/papers/{paper.slug}/")
    summary = response.context["summary"]
    assert (summary.node_count, summary.leaf_count, summary.depth) == (7, 4, 2)
    assert summary.categories == {"Code Development": 2, "Code Execution": 1, "Result Analysis": 1}
    assert not summary.unsaved


def test_the_import_form_imports_a_zip_and_redirects_to_the_paper(client_for):
    upload = _zip({"my-paper/rubric.json": json.dumps(inner("r", [leaf("x")])).encode(),
                   "my-paper/config.yaml": b"id: my-paper\ntitle: My paper\n"})
    response = client_for("curator").post("/papers/import/", {"file": upload})
    assert response.status_code == 302 and response["Location"] == "/papers/my-paper/"
    assert Paper.objects.get(slug="my-paper").title == "My paper"


def test_the_import_form_lists_every_problem_of_a_refused_tree(client_for):
    tree = inner("r", [leaf("x", weight=-2), leaf("y", category="Cooking")])
    response = client_for("curator").post("/papers/import/", {"file": _zip({"rubric.json": json.dumps(tree).encode()})})
    html = response.content.decode()
    assert response.status_code == 400
    assert "Import refused, nothing was stored" in html and "2 problems" in html
    assert "weight must not be negative" in html and "Unknown task_category" in html
    assert not Paper.objects.exists()


def test_the_import_form_explains_a_zip_without_rubric(client_for):
    response = client_for("curator").post("/papers/import/", {"file": _zip({"notes.txt": b"hi"})})
    assert response.status_code == 400 and b"The zip has no rubric.json" in response.content


def test_a_viewer_cannot_open_the_import_form(client_for):
    assert client_for("viewer").get("/papers/import/").status_code == 403


def test_the_editor_page_carries_the_tree_as_escaped_json(client_for):
    paper = make_paper(inner("root", [leaf("x", requirements="</script><script>alert(1)</script>")]))
    response = client_for("viewer").get(f"/rubrics/{paper.slug}/edit/")
    html = response.content.decode()
    assert response.status_code == 200 and 'id="rubric-data"' in html
    assert "</script><script>alert(1)" not in html
    assert response.context["payload"]["canEdit"] is False


def test_saving_a_version_from_the_versions_page(client_for):
    paper = make_paper()
    update_node(paper, pk_of(paper, "b"), 1, {"weight": 2})
    client = client_for("curator")
    response = client.post(f"/rubrics/{paper.slug}/versions/save/", {"message": "b counts double"})
    assert response.status_code == 302
    assert paper.rubric_versions.get(number=2).message == "b counts double"


def test_the_versions_page_shows_a_diff(client_for):
    paper = make_paper()
    update_node(paper, pk_of(paper, "b"), 1, {"requirements": "Reworded"})
    html = client_for("viewer").get(f"/rubrics/{paper.slug}/versions/?a=1&b=draft").content.decode()
    assert "0 added · 0 removed · 0 moved · 1 changes" in html and "Reworded" in html


def test_the_versions_page_shows_which_words_of_a_requirement_changed(client_for):
    paper = make_paper()
    update_node(paper, pk_of(paper, "b"), 1, {"requirements": "Leaf b is mostly done"})
    html = client_for("viewer").get(f"/rubrics/{paper.slug}/versions/?a=1&b=draft").content.decode()
    assert '<span class="word-diff" data-testid="word-diff">Leaf b is <ins>mostly </ins>done</span>' in html


def test_a_stale_discard_from_the_versions_page_asks_again_and_changes_nothing(client_for):
    paper = make_paper()
    update_node(paper, pk_of(paper, "b"), 1, {"weight": 2})
    response = client_for("curator").post(f"/rubrics/{paper.slug}/versions/1/restore/",
                                          {"draft": "discard", "draft_hash": "seen-before-the-last-edit"})
    assert response.status_code == 302 and response["Location"].endswith("?restore=1#restore-confirm")
    assert paper.rubric_versions.count() == 1 and paper.rubric_nodes.get(node_id="b").weight == 2
    page = client_for("curator").get(response["Location"])
    assert b'data-testid="restore-confirm"' in page.content


def test_restoring_from_the_versions_page(client_for):
    paper = make_paper()
    delete_subtree(paper, pk_of(paper, "a"), None)
    create_version(paper, None, "no a")
    client_for("curator").post(f"/rubrics/{paper.slug}/versions/1/restore/")
    assert paper.rubric_versions.get(number=3).message == "Restored version 1"
    assert paper.rubric_nodes.filter(node_id="a").exists()


@pytest.mark.parametrize("path", ["versions/save/", "versions/1/restore/"])
def test_a_viewer_cannot_save_or_restore_from_the_pages(client_for, path):
    paper = make_paper()
    assert client_for("viewer").post(f"/rubrics/{paper.slug}/{path}").status_code == 403


def test_anonymous_users_are_sent_to_login_from_the_editor(client):
    paper = make_paper()
    response = client.get(f"/rubrics/{paper.slug}/edit/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_curator_edits_paper_metadata_blacklist_and_tags(client_for):
    paper = make_paper()
    response = client_for("curator").post(f"/papers/{paper.slug}/edit/", {
        "title": "Renamed", "split": "eval", "status": "curated", "year": "2025",
        "blacklist_text": "https://a.example\n\nhttps://b.example", "tags_text": "rl, vision",
        "revision": paper.revision,
    })
    assert response.status_code == 302
    paper.refresh_from_db()
    assert (paper.title, paper.split, paper.year) == ("Renamed", "eval", 2025)
    assert paper.blacklist == ["https://a.example", "https://b.example"] and paper.tags == ["rl", "vision"]


def test_a_viewer_cannot_edit_a_paper(client_for):
    paper = make_paper()
    assert client_for("viewer").get(f"/papers/{paper.slug}/edit/").status_code == 403


def test_the_import_form_refuses_an_oversized_upload_clearly(client_for, settings):
    settings.KLONG_MAX_UPLOAD_BYTES = 1024
    upload = _zip({"rubric.json": json.dumps(leaf("x")).encode() + b" " * 5000})
    upload = io.BytesIO(upload.getvalue() + b"\0" * 2048)
    upload.name = "big.zip"
    response = client_for("curator").post("/papers/import/", {"file": upload})
    assert response.status_code == 400 and b"larger than the limit of 1,024 bytes" in response.content
