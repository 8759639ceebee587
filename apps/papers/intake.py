"""Paper intake for Research-Factory: candidate lists in, triage, PDFs attached, papers out.

The intake page, the API and the tests call these functions; parsing and filtering are the pure
functions of ``apps/papers/candidates.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, BinaryIO

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils.text import slugify

from apps.papers.candidates import (
    CandidateFilter,
    CandidateListError,
    CandidateRecord,
    filter_candidates,
    guess_format,
    parse_candidates,
)
from apps.papers.models import Paper, PaperCandidate
from apps.papers.pdf import PdfError, pdf_to_markdown

__all__ = ["CandidateListError", "PdfError"]


@dataclass(slots=True)
class IntakeResult:
    created: list[PaperCandidate] = field(default_factory=list)
    duplicates: list[CandidateRecord] = field(default_factory=list)
    dropped: list[tuple[CandidateRecord, str]] = field(default_factory=list)
    fmt: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.fmt, "created": len(self.created), "ids": [c.pk for c in self.created],
            "duplicates": [{"line": r.line, "title": r.title, "arxiv_id": r.arxiv_id} for r in self.duplicates],
            "dropped": [{"line": r.line, "title": r.title, "reason": why} for r, why in self.dropped],
        }


def decode_upload(upload: BinaryIO, limit: int | None = None) -> str:
    """An uploaded list as text; refuses files over the upload limit and non-UTF-8 bytes."""
    limit = limit or int(settings.KLONG_MAX_UPLOAD_BYTES)
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise CandidateListError([(0, f"the file is larger than the limit of {limit:,} bytes")])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CandidateListError([(line, "the file is not UTF-8 text")]) from None


def import_candidates(text: str, fmt: str = "", *, rule: CandidateFilter | None = None, source_name: str = "",
                      user=None) -> IntakeResult:
    """Parse the whole list (refused whole on any bad line), drop what the filter rejects, skip
    papers already listed, and store the rest as new candidates in one transaction."""
    fmt = fmt or guess_format(source_name, text)
    records = parse_candidates(text, fmt)
    kept, dropped = filter_candidates(records, rule or CandidateFilter())
    result = IntakeResult(dropped=dropped, fmt=fmt)
    with transaction.atomic():
        existing = set(PaperCandidate.objects.filter(key__in=[r.key() for r in kept]).values_list("key", flat=True))
        rows = []
        for record in kept:
            if record.key() in existing:
                result.duplicates.append(record)
                continue
            rows.append(PaperCandidate(
                key=record.key()[:600], title=record.title[:500], arxiv_id=record.arxiv_id, authors=record.authors,
                venue=record.venue[:100], venue_raw=record.venue_raw[:500], year=record.year,
                citations=record.citations, url=record.url[:500], pdf_url=record.pdf_url[:500],
                abstract=record.abstract, extra=record.extra, source_format=fmt, source_name=source_name[:300],
                source_line=record.line, created_by=user if getattr(user, "is_authenticated", False) else None,
            ))
        for row in rows:
            row.save()  # one by one: bulk_create does not return pks on every database
        result.created = rows
    return result


def filtered_candidates(params: dict[str, Any], queryset: QuerySet | None = None) -> QuerySet:
    """Candidates matching the list page's (and the API's) filters: q, status, venue (one or a
    list), year_min, year_max, min_citations."""
    rows = queryset if queryset is not None else PaperCandidate.objects.all()
    if q := str(params.get("q") or "").strip():
        rows = rows.filter(Q(title__icontains=q) | Q(arxiv_id__icontains=q) | Q(authors__icontains=q))
    if status := params.get("status"):
        rows = rows.filter(status=status)
    venues = params.get("venue")
    if venues:
        rows = rows.filter(venue__in=[venues] if isinstance(venues, str) else list(venues))
    if params.get("year_min") is not None:
        rows = rows.filter(year__gte=params["year_min"])
    if params.get("year_max") is not None:
        rows = rows.filter(year__lte=params["year_max"])
    if params.get("min_citations") is not None:
        rows = rows.filter(citations__gte=params["min_citations"])
    return rows


def set_candidate_status(candidates: QuerySet, status: str) -> int:
    """Keep or reject candidates; imported ones stay imported (they already have a paper)."""
    if status not in (PaperCandidate.Status.NEW, PaperCandidate.Status.KEPT, PaperCandidate.Status.REJECTED):
        raise ValueError(f"cannot set status {status!r} by hand")
    return candidates.exclude(status=PaperCandidate.Status.IMPORTED).update(status=status)


def _free_slug(candidate: PaperCandidate) -> str:
    base = slugify(f"arxiv-{candidate.arxiv_id}" if candidate.arxiv_id else candidate.title)[:180] or "paper"
    slug, n = base, 2
    while Paper.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


def attach_pdf(candidate: PaperCandidate, upload, *, split: str = Paper.Split.TRAIN, user=None) -> Paper:
    """Convert the PDF to Markdown and make (or update) the candidate's paper; the candidate is
    then ``imported``. Raises ``PdfError`` (nothing stored) for a file that is not a readable PDF."""
    limit = int(settings.KLONG_MAX_UPLOAD_BYTES)
    if getattr(upload, "size", 0) > limit:
        raise PdfError(f"The PDF is larger than the limit of {limit:,} bytes.")
    markdown = pdf_to_markdown(upload, title=candidate.title)
    upload.seek(0)
    with transaction.atomic():
        candidate = PaperCandidate.objects.select_for_update().get(pk=candidate.pk)
        # Locked too: a curator's edit of the paper waits, and is then refused as stale, never undone.
        paper = Paper.objects.select_for_update().filter(pk=candidate.paper_id).first()
        if paper is None:
            paper = Paper(slug=_free_slug(candidate), split=split)
        paper.title = (candidate.title or paper.title or candidate.arxiv_id)[:500]
        paper.arxiv_id = candidate.arxiv_id or paper.arxiv_id
        paper.venue = candidate.venue or paper.venue
        paper.year = candidate.year or paper.year
        paper.abstract = candidate.abstract or paper.abstract
        paper.markdown = markdown
        paper.pdf.save(f"{paper.slug}.pdf", upload, save=False)
        paper.save()
        candidate.paper = paper
        candidate.status = PaperCandidate.Status.IMPORTED
        candidate.save(update_fields=["paper", "status"])
    return paper
