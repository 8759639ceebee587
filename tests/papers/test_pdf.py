from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.papers.models import Paper
from apps.papers.pdf import PdfError, pdf_to_markdown


def text_pdf(*pages: str) -> bytes:
    """A minimal PDF with one line of Helvetica text per page, built by hand (no PDF writer needed)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {len(objects)} 0 R "
                       "/Resources << /Font << /F1 3 0 R >> >> >>")
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n{body}\nendobj\n".encode())
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    out.write("".join(f"{o:010d} 00000 n \n" for o in offsets).encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def test_a_pdfs_text_becomes_markdown_with_pages_separated():
    markdown = pdf_to_markdown(io.BytesIO(text_pdf("Attention is all you need", "L = -sum log p(a_t)")), "Paper")
    assert markdown.startswith("# Paper\n")
    assert "Attention is all you need\n\n---\n\nL = -sum log p(a_t)" in markdown


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"PK\x03\x04 a zip", "not a PDF"), (b"%PDF-1.4\ngarbage", "could not be read")],
)
def test_a_file_that_is_not_a_readable_pdf_is_refused_with_the_reason(data, message):
    with pytest.raises(PdfError, match=message):
        pdf_to_markdown(io.BytesIO(data))


@pytest.mark.django_db
def test_uploading_a_pdf_on_the_edit_page_fills_the_markdown(client_for):
    paper = Paper.objects.create(slug="p", title="Routing")
    upload = SimpleUploadedFile("paper.pdf", text_pdf("Sparse routing works"), content_type="application/pdf")
    response = client_for("curator").post(
        "/papers/p/edit/", {"title": "Routing", "split": "train", "status": "draft", "pdf_upload": upload,
                            "revision": paper.revision}
    )
    assert response.status_code == 302
    paper.refresh_from_db()
    assert "Sparse routing works" in paper.markdown and paper.pdf.name.endswith(".pdf")


@pytest.mark.django_db
def test_a_bad_pdf_on_the_edit_page_is_a_form_error_and_changes_nothing(client_for):
    paper = Paper.objects.create(slug="p", title="Routing", markdown="kept")
    upload = SimpleUploadedFile("paper.pdf", b"not a pdf at all", content_type="application/pdf")
    response = client_for("curator").post(
        "/papers/p/edit/", {"title": "Changed", "split": "train", "status": "draft", "pdf_upload": upload,
                            "revision": paper.revision}
    )
    assert response.status_code == 400 and b"not a PDF" in response.content
    paper.refresh_from_db()
    assert (paper.title, paper.markdown) == ("Routing", "kept")
