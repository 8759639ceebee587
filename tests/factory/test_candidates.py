"""Paper intake: candidate lists parsed, filtered, refused with line numbers, PDFs attached."""

from __future__ import annotations

import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.papers.candidates import (
    CandidateFilter,
    CandidateListError,
    filter_candidates,
    normalise_venue,
    parse_candidates,
)
from apps.papers.models import Paper, PaperCandidate
from tests.papers.test_pdf import text_pdf

BIB = """% exported
@inproceedings{vaswani2017,
  title = {Attention Is {All} You Need},
  author = {Vaswani, Ashish and Shazeer, Noam},
  booktitle = {Advances in Neural Information Processing Systems},
  year = 2017,
  eprint = {1706.03762},
  citations = {120000},
}

@article{old,
  title = "A 2015 paper",
  journal = {Proceedings of ICML 2015},
  year = {2015},
}
"""

CSV = """title,arxiv_id,venue,year,citations,topic
KLong,2602.17547,ICML,2026,12,agents
Routing,,International Conference on Learning Representations,2024,300,moe
"""


def test_arxiv_ids_in_every_usual_spelling_are_read_and_duplicates_merged():
    text = "# mine\n2602.17547\narXiv:1706.03762v7 Attention\nhttps://arxiv.org/abs/2602.17547v2\n\ncs/0101001\n"
    records = parse_candidates(text, "arxiv")
    assert [r.arxiv_id for r in records] == ["2602.17547", "1706.03762v7", "cs/0101001"]
    assert records[1].title == "Attention" and records[1].line == 3


def test_bibtex_fields_become_candidates_with_normalised_venues():
    first, second = parse_candidates(BIB, "bibtex")
    assert (first.title, first.arxiv_id, first.venue, first.year, first.citations) == (
        "Attention Is All You Need", "1706.03762", "NeurIPS", 2017, 120000)
    assert first.authors == "Vaswani, Ashish; Shazeer, Noam"
    assert (second.venue, second.year, second.line) == ("ICML", 2015, 11)


def test_csv_columns_map_to_fields_and_unknown_columns_are_kept():
    klong, routing = parse_candidates(CSV, "csv")
    assert (klong.arxiv_id, klong.venue, klong.year, klong.citations, klong.extra) == (
        "2602.17547", "ICML", 2026, 12, {"topic": "agents"})
    assert routing.venue == "ICLR" and routing.venue_raw.startswith("International")


@pytest.mark.parametrize(("fmt", "text", "expected"), [
    ("arxiv", "2602.17547\nnot-an-id\n\n1706.03762\nhttp://example.com/x\n",
     [(2, "'not-an-id' is not an arXiv id"), (5, "is not an arXiv id")]),
    ("csv", "title,year,citations\nA,20x4,3\nB,2020,many\nC,2021\n",
     [(2, "year '20x4'"), (3, "citations 'many'"), (4, "2 cells but the header has 3")]),
    ("csv", "title,url\nA,javascript:alert(1)\n", [(2, "is not an http(s) address")]),
    ("bibtex", "@article{a,\n  title = {Fine},\n}\n@article{b,\n  title = {Broken,\n  year = 2020,\n}\n",
     [(5, "never closed with }; check the braces of its field title")]),
    ("bibtex", "@article{a,\n  title = {T},\n  year 2020,\n}\n", [(3, "expected 'name = value'")]),
])
def test_a_bad_list_is_refused_whole_naming_each_bad_line(fmt, text, expected):
    with pytest.raises(CandidateListError) as caught:
        parse_candidates(text, fmt)
    errors = caught.value.errors
    assert [line for line, _ in errors] == [line for line, _ in expected]
    for (_, message), (_, fragment) in zip(errors, expected, strict=True):
        assert fragment in message


def test_bibtex_macros_concatenation_duplicate_keys_and_mail_addresses_in_comments():
    text = ("% curated by me@example.com\n@string{icml = {International Conference on Machine Learning}}\n"
            '@inproceedings{a, title = "O" # {ne}, booktitle = icml # " 2021", year = 2021}\n'
            "@inproceedings{a, title = {Two}, title = {Two, corrected}, eprint = {2101.00001}}\n"
            "@misc{b, title = {One}}\n")
    first, second = parse_candidates(text, "bibtex")  # the second "One" merges into the first
    assert (first.title, first.venue, first.year, first.line) == ("One", "ICML", 2021, 3)
    assert first.venue_raw == "International Conference on Machine Learning 2021"
    assert (second.title, second.arxiv_id, second.extra) == ("Two, corrected", "2101.00001", {"bibtex_key": "a"})


def test_a_brace_left_open_mid_file_names_its_field_and_every_other_bad_entry():
    text = ("@article{a,\n  title = {Open,\n  year = 2020,\n\n@article{b, title = {Fine}}\n"
            "@article(c, title = {No closer}\n\n@article{d,\n  title = {T}, year 2020}\n")
    with pytest.raises(CandidateListError) as caught:
        parse_candidates(text, "bibtex")
    assert caught.value.errors == [
        (2, "the entry a is never closed with }; check the braces of its field title"),
        (6, "the entry c is never closed with ); check the braces of its field title"),
        (9, "expected 'name = value' in entry d"),
    ]


def test_thousands_of_broken_entries_are_refused_in_linear_time():
    # Each entry's brace is left open: the hand-written parser rescanned the rest of the file for
    # every one of them (3,000 took 24 s).
    text = "".join(f"@article{{k{i},\n title={{T\n\n" for i in range(3000))
    started = time.monotonic()
    with pytest.raises(CandidateListError, match="3000 problems"):
        parse_candidates(text, "bibtex")
    assert time.monotonic() - started < 3


def test_the_filter_keeps_venue_year_and_citation_matches_and_says_why_others_dropped():
    records = parse_candidates(CSV, "csv") + parse_candidates(BIB, "bibtex")
    rule = CandidateFilter(frozenset({normalise_venue("icml"), "ICLR", "NeurIPS"}), 2020, 2026, 50)
    kept, dropped = filter_candidates(records, rule)
    assert [r.title for r in kept] == ["Routing"]
    reasons = {r.title: why for r, why in dropped}
    assert reasons["KLong"] == "12 citations < 50"
    assert reasons["Attention Is All You Need"] == "year 2017 before 2020"


@pytest.mark.django_db
def test_importing_through_the_page_stores_candidates_and_skips_ones_already_listed(client_for):
    client = client_for("curator")
    upload = SimpleUploadedFile("list.csv", CSV.encode(), content_type="text/csv")
    response = client.post("/papers/candidates/import/", {"file": upload, "min_citations": "100"})
    assert response.status_code == 302
    assert list(PaperCandidate.objects.values_list("title", "status")) == [("Routing", "new")]
    again = client.post("/papers/candidates/import/", {"text": CSV, "format": "csv"}, follow=True)
    assert "1 already listed" in again.content.decode()
    assert PaperCandidate.objects.count() == 2
    listing = client.get("/papers/candidates/?venues=iclr&year_min=2024").content.decode()
    assert ">Routing</a>" in listing and ">KLong</a>" not in listing
    routing = PaperCandidate.objects.get(title="Routing")
    client.post("/papers/candidates/triage/", {"ids": [routing.pk], "status": "kept", "query": "status=new"})
    routing.refresh_from_db()
    assert routing.status == "kept"
    assert client_for("viewer").post("/papers/candidates/triage/", {"ids": [routing.pk], "status": "rejected"}
                                     ).status_code == 403


@pytest.mark.django_db
def test_a_bad_list_on_the_page_shows_every_bad_line_and_stores_nothing(client_for):
    response = client_for("curator").post("/papers/candidates/import/", {"text": "2602.17547\nbogus\n", "format": "arxiv"})
    assert response.status_code == 400
    body = response.content.decode()
    assert "Nothing was imported" in body and "<td class=\"num\">2</td>" in body and "&#x27;bogus&#x27;" in body
    assert not PaperCandidate.objects.exists()


@pytest.mark.django_db
def test_the_api_imports_filters_triages_and_refuses_bad_lines_with_positions(client_for):
    api = client_for("curator")
    bad = api.post("/api/paper-candidates/import/", {"text": "title,year\nA,nineteen\n", "format": "csv"},
                   content_type="application/json")
    assert bad.status_code == 400 and bad.json()["errors"] == [{"line": 2, "message": "year 'nineteen' is not a four-digit year"}]
    made = api.post("/api/paper-candidates/import/", {"text": BIB, "venues": ["NeurIPS"]}, content_type="application/json")
    assert made.status_code == 201, made.content
    assert made.json()["created"] == 1 and made.json()["dropped"][0]["reason"].startswith("venue ICML")
    pk = made.json()["ids"][0]
    rows = api.get("/api/paper-candidates/?venue=nips&min_citations=1000").json()["results"]
    assert [r["id"] for r in rows] == [pk]
    assert api.patch(f"/api/paper-candidates/{pk}/", {"status": "kept"}, content_type="application/json").json()["status"] == "kept"
    assert client_for("viewer").patch(f"/api/paper-candidates/{pk}/", {"status": "rejected"},
                                      content_type="application/json").status_code == 403
    assert client_for("outsider").get("/api/paper-candidates/").status_code == 403


@pytest.mark.django_db
def test_attaching_a_pdf_makes_a_paper_with_markdown_and_refuses_non_pdfs(client_for):
    candidate = PaperCandidate.objects.create(key="arxiv:2602.17547", title="KLong", arxiv_id="2602.17547",
                                              venue="ICML", year=2026, source_format="arxiv")
    api = client_for("curator")
    assert "Attach the PDF" in api.get(f"/papers/candidates/{candidate.pk}/").content.decode()
    assert "Attach the PDF" not in client_for("viewer").get(f"/papers/candidates/{candidate.pk}/").content.decode()
    refused = api.post(f"/api/paper-candidates/{candidate.pk}/attach-pdf/",
                       {"pdf": SimpleUploadedFile("x.pdf", b"PK\x03\x04zip")})
    assert refused.status_code == 400 and "not a PDF" in refused.json()["pdf"][0]
    assert not Paper.objects.exists()
    page = client_for("curator").post(f"/papers/candidates/{candidate.pk}/",
                                      {"pdf": SimpleUploadedFile("k.pdf", text_pdf("Splitting long trajectories")),
                                       "split": "train"})
    assert page.status_code == 302
    paper = Paper.objects.get()
    assert (paper.slug, paper.venue, paper.year) == ("arxiv-260217547", "ICML", 2026)
    assert "Splitting long trajectories" in paper.markdown and paper.markdown.startswith("# KLong")
    candidate.refresh_from_db()
    assert candidate.status == "imported" and candidate.paper == paper
