"""A paper's PDF as Markdown text, with pypdf (pure Python, maintained, BSD).

The text layer is taken as written, maths included; pages are separated by a rule so a reader
can find their place. Scanned PDFs without a text layer give a clear error instead of an empty
paper.
"""

from __future__ import annotations

import re
from typing import BinaryIO

from pypdf import PdfReader
from pypdf.errors import LimitReachedError, PyPdfError

from apps.core.domain import Invalid


class PdfError(Invalid, ValueError):
    """Not a readable PDF; the API puts it on the ``pdf`` field it came in."""

    field = "pdf"


def pdf_to_markdown(stream: BinaryIO, title: str = "") -> str:

    stream.seek(0)  # a form's file field may have read it already
    head = stream.read(5)
    stream.seek(0)
    if head != b"%PDF-":
        raise PdfError("This file is not a PDF (it does not start with %PDF-).")
    try:
        reader = PdfReader(stream)
        if reader.is_encrypted:
            raise PdfError("This PDF is encrypted; upload an unprotected copy.")
        pages = [page.extract_text() or "" for page in reader.pages]
    except LimitReachedError as exc:
        # pypdf's own caps on decompressed streams, arrays and images (a bomb, or a broken file).
        raise PdfError(f"This PDF is refused: it goes past a safety limit of the PDF reader ({exc}).") from None
    except PyPdfError as exc:
        raise PdfError(f"This PDF could not be read: {exc}") from None
    if not any(page.strip() for page in pages):
        raise PdfError("This PDF has no text layer (a scan?): paste the paper as Markdown instead.")
    # Hyphenated line ends re-joined; runs of blank lines collapsed.
    texts = [re.sub(r"\n{3,}", "\n\n", re.sub(r"(\w)-\n(\w)", r"\1\2", page.strip())) for page in pages]
    body = "\n\n---\n\n".join(texts)
    return f"# {title}\n\n{body}\n" if title else body + "\n"
