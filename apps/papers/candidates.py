"""Candidate paper lists: arXiv ids, BibTeX and CSV read into plain records, then filtered.

No Django (BibTeX is split by bibtexparser): the intake page, the API and the tests call the
same functions. A
list is checked whole: every bad line is reported with its line number (``CandidateListError``)
and nothing is stored, so a curator fixes the file once instead of line by line.

Research-Factory takes candidates from ICML / NeurIPS / ICLR of recent years and keeps the
impactful ones; venues are normalised to those short names (``"Advances in Neural Information
Processing Systems 36"`` -> ``NeurIPS``) so a filter on venue works whatever the source wrote.
"""

from __future__ import annotations

import bisect
import csv
import io
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import bibtexparser
from bibtexparser.model import DuplicateBlockKeyBlock, DuplicateFieldKeyBlock, Entry, ParsingFailedBlock, String

from apps.core.domain import Invalid

FORMATS = ("arxiv", "bibtex", "csv")
MAX_LINE_ERRORS = 50  # enough to fix a file; a binary upload would otherwise list thousands
# "@article{key," or "@misc(key,": the type, opening bracket and citation key of a block bibtexparser refused.
_BLOCK_HEAD = re.compile(r"@\s*(\w+)\s*([{(])\s*([^,\s{}()]*)")
# Every bad block comes back to the curator with its line; bibtexparser's own warning per block
# would only fill the log (a broken upload can have thousands).
logging.getLogger("bibtexparser.splitter").setLevel(logging.ERROR)

# Canonical venue -> patterns that name it (checked on the lower-cased text).
VENUE_ALIASES: dict[str, tuple[str, ...]] = {
    "NeurIPS": ("neurips", "nips", "neural information processing systems"),
    "ICML": ("icml", "international conference on machine learning"),
    "ICLR": ("iclr", "international conference on learning representations"),
    "CVPR": ("cvpr", "computer vision and pattern recognition"),
    "ACL": ("acl", "association for computational linguistics"),
    "AAAI": ("aaai",),
}
_WORD = {name: re.compile(r"(?<![a-z])(" + "|".join(re.escape(a) for a in aliases) + r")(?![a-z])")
         for name, aliases in VENUE_ALIASES.items()}

# New-style ids (2602.17547, 1706.03762v7) and old-style ones (cs/0101001, math.AG/0309136).
_ARXIV_NEW = r"\d{4}\.\d{4,5}(?:v\d+)?"
_ARXIV_OLD = r"[a-z\-]+(?:\.[A-Z]{2})?/\d{7}(?:v\d+)?"
ARXIV_ID = re.compile(rf"^(?:{_ARXIV_NEW}|{_ARXIV_OLD})$")
_ARXIV_IN_TEXT = re.compile(
    rf"^(?:arxiv:\s*|https?://(?:www\.|export\.)?arxiv\.org/(?:abs|pdf)/)?({_ARXIV_NEW}|{_ARXIV_OLD})(?:\.pdf)?/?$",
    re.IGNORECASE,
)


class CandidateListError(Invalid, ValueError):
    """The list was refused whole; ``errors`` are ``(line, message)`` pairs, line 1-based."""

    def __init__(self, errors: list[tuple[int, str]]) -> None:
        self.errors = errors[:MAX_LINE_ERRORS]
        more = len(errors) - len(self.errors)
        summary = "; ".join(f"line {line}: {message}" for line, message in self.errors[:3])
        super().__init__(f"Nothing was imported: {len(errors)} problem{'s' if len(errors) != 1 else ''} in the "
                         f"list: {summary}" + (" ..." if len(errors) > 3 else "")
                         + (f" ({more} more not shown)" if more else ""), details={"errors": self.as_list()})

    def as_list(self) -> list[dict[str, Any]]:
        return [{"line": line, "message": message} for line, message in self.errors]


@dataclass(slots=True)
class CandidateRecord:
    title: str = ""
    arxiv_id: str = ""
    authors: str = ""
    venue: str = ""  # canonical (NeurIPS, ICML, ...) when recognised, else as written
    venue_raw: str = ""
    year: int | None = None
    citations: int | None = None
    url: str = ""
    pdf_url: str = ""
    abstract: str = ""
    line: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def key(self) -> str:
        """What makes two records the same paper: the arXiv id without version, else the title."""
        if self.arxiv_id:
            return "arxiv:" + re.sub(r"v\d+$", "", self.arxiv_id)
        return "title:" + " ".join(re.sub(r"[^\w\s]", " ", self.title.lower()).split())


@dataclass(frozen=True, slots=True)
class CandidateFilter:
    """Which candidates to keep; an empty field keeps everything on that axis."""

    venues: frozenset[str] = frozenset()
    year_min: int | None = None
    year_max: int | None = None
    min_citations: int | None = None

    def reason_to_drop(self, record: CandidateRecord) -> str | None:
        if self.venues and record.venue not in self.venues:
            return f"venue {record.venue or '(none)'} not in {', '.join(sorted(self.venues))}"
        if self.year_min is not None and (record.year is None or record.year < self.year_min):
            return f"year {record.year or '(none)'} before {self.year_min}"
        if self.year_max is not None and (record.year is None or record.year > self.year_max):
            return f"year {record.year or '(none)'} after {self.year_max}"
        if self.min_citations is not None and (record.citations is None or record.citations < self.min_citations):
            return f"{record.citations if record.citations is not None else 'unknown'} citations < {self.min_citations}"
        return None


def normalise_venue(text: str) -> str:
    """``"Proceedings of ICML 2023"`` -> ``ICML``; unknown venues come back trimmed, as written."""
    lowered = text.lower()
    for name, pattern in _WORD.items():
        if pattern.search(lowered):
            return name
    return " ".join(text.split())[:100]


def parse_arxiv_id(text: str) -> str | None:
    match = _ARXIV_IN_TEXT.match(text.strip())
    return match.group(1) if match else None


def _year(value: str, line: int, errors: list[tuple[int, str]]) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not re.fullmatch(r"\d{4}", value) or not 1900 <= int(value) <= 2100:
        errors.append((line, f"year {value!r} is not a four-digit year"))
        return None
    return int(value)


def _citations(value: str, line: int, errors: list[tuple[int, str]]) -> int | None:
    value = value.strip().replace(",", "").replace("_", "")
    if not value:
        return None
    if not value.isdigit():
        errors.append((line, f"citations {value!r} is not a whole number"))
        return None
    return int(value)


def _http_url(value: str, name: str, line: int, errors: list[tuple[int, str]]) -> str:
    # Shown as a link on the candidate page: only web addresses, never javascript: or data: URLs.
    value = value.strip()
    if value and not re.match(r"https?://[^\s]+$", value, re.IGNORECASE):
        errors.append((line, f"{name} {value[:60]!r} is not an http(s) address"))
        return ""
    return value[:500]


# ---------------------------------------------------------------------------------------------
# arXiv id lists


def parse_arxiv_list(text: str) -> list[CandidateRecord]:
    """One id per line (bare, ``arXiv:``-prefixed or an abs/pdf URL), optionally followed by a
    title after whitespace; blank lines and ``#`` comments are skipped."""
    records: list[CandidateRecord] = []
    errors: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        token, _, title = line.partition(" ")
        arxiv_id = parse_arxiv_id(token)
        if arxiv_id is None:
            errors.append((number, f"{token[:60]!r} is not an arXiv id (e.g. 2602.17547 or arXiv:1706.03762v7)"))
            continue
        records.append(CandidateRecord(title=title.strip(), arxiv_id=arxiv_id, line=number,
                                       url=f"https://arxiv.org/abs/{arxiv_id}",
                                       pdf_url=f"https://arxiv.org/pdf/{arxiv_id}"))
    if errors:
        raise CandidateListError(errors)
    return records


# ---------------------------------------------------------------------------------------------
# BibTeX


def _clean_tex(value: str) -> str:
    # Braces protect capitals in BibTeX titles; they are not part of the text.
    return " ".join(value.replace("{", "").replace("}", "").replace("\\&", "&").split())


def _bibtex_value(value: str, macros: dict[str, str]) -> str:
    """A field value as text: ``{...}`` and ``"..."`` parts lose their delimiters, @string macros
    are replaced, numbers stay, and parts joined with ``#`` are concatenated. bibtexparser 2.1
    leaves a ``#`` expression as written (its issue #396), so values are evaluated here."""
    parts: list[str] = []
    depth, quoted, start = 0, False, 0
    for i, char in enumerate(value):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == '"' and depth == 0:
            quoted = not quoted
        elif char == "#" and depth == 0 and not quoted:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    text = []
    for part in (p.strip() for p in parts):
        if len(part) >= 2 and (part[0], part[-1]) in (("{", "}"), ('"', '"')):
            text.append(part[1:-1])
        else:
            text.append(macros.get(part.lower(), part))
    return "".join(text)


def _bibtex_failure(block: ParsingFailedBlock, text: str, newlines: list[int]) -> tuple[int, str]:
    """(line, message) for a block bibtexparser could not read."""
    start = (block.start_line or 0) + 1
    raw = block.raw or ""
    head = _BLOCK_HEAD.match(raw)
    kind, closer, key = "", "}", "(no key)"
    if head:
        kind, closer, key = head.group(1).lower(), ")" if head.group(2) == "(" else "}", head.group(3) or key
    reason = getattr(block.error, "abort_reason", "") or str(block.error)
    end = getattr(block.error, "end_index", None)
    if reason.startswith(("Unexpectedly reached end of file", "Unexpected block start")):
        if kind in ("comment", "preamble", "string"):
            return start, f"a @{kind} block is never closed with {closer}"
        # Usually a brace left open in the last field read swallowed the closer: name that field,
        # read again with the closer (or a closing brace and the closer) added.
        for ending in (closer, "}" + closer):
            closed = bibtexparser.parse_string(raw + ending, parse_stack=[]).entries
            if closed and closed[0].fields:
                field = closed[0].fields[-1]
                return (start + field.start_line,
                        f"the entry {key} is never closed with {closer}; check the braces of its field {field.key}")
        return start, f"the entry {key} is never closed with {closer}"
    if reason.startswith("Expected comma after entry key"):
        return start, "the entry has no citation key followed by a comma"
    line = start
    if end is not None:
        # The line of the last text the parser read before it stopped.
        stop = min(end, len(text)) - 1
        while stop > 0 and text[stop].isspace():
            stop -= 1
        line = bisect.bisect_left(newlines, stop) + 1
    if reason.startswith("Expected a `=` after entry key"):
        return line, f"expected 'name = value' in entry {key}"
    return line, f"entry {key}: {reason}"


def _bibtex_entries(text: str) -> tuple[list[tuple[int, str, dict[str, str]]], list[tuple[int, str]]]:
    """(line, citation key, fields) per entry in file order, and (line, message) per block that
    cannot be read. A citation key used twice keeps both entries (the papers merge later)."""
    split = bibtexparser.parse_string(text, parse_stack=[])  # blocks, fields and lines; values as written
    entries: list[tuple[int, str, dict[str, str]]] = []
    errors: list[tuple[int, str]] = []
    macros: dict[str, str] = {}
    newlines = [m.start() for m in re.finditer("\n", text)] if split.failed_blocks else []
    for block in split.blocks:
        if isinstance(block, (DuplicateBlockKeyBlock, DuplicateFieldKeyBlock)):
            block = block.ignore_error_block
        if isinstance(block, String):
            macros[block.key.lower()] = _bibtex_value(block.value, macros)
        elif isinstance(block, Entry):
            # A field named twice keeps its last value.
            fields = {f.key.lower(): _bibtex_value(f.value, macros) for f in block.fields}
            entries.append(((block.start_line or 0) + 1, block.key, fields))
        elif isinstance(block, ParsingFailedBlock):
            errors.append(_bibtex_failure(block, text, newlines))
    return entries, errors


def parse_bibtex(text: str) -> list[CandidateRecord]:
    """Entries read by bibtexparser (v2); @comment, @preamble and @string blocks are no papers."""
    records: list[CandidateRecord] = []
    entries, errors = _bibtex_entries(text)
    for line, key, fields in entries:
        title = _clean_tex(fields.get("title", ""))
        if not title:
            errors.append((line, f"entry {key} has no title"))
            continue
        arxiv_id = ""
        for candidate in (fields.get("eprint", ""), fields.get("arxiv", ""), fields.get("url", ""),
                          fields.get("journal", "").replace("arXiv preprint arXiv:", "")):
            arxiv_id = parse_arxiv_id(candidate.strip()) or ""
            if arxiv_id:
                break
        venue_raw = _clean_tex(fields.get("booktitle") or fields.get("journal") or fields.get("venue") or "")
        record = CandidateRecord(
            title=title, arxiv_id=arxiv_id, authors=_clean_tex(fields.get("author", "")).replace(" and ", "; "),
            venue_raw=venue_raw, venue=normalise_venue(venue_raw) if venue_raw else "",
            year=_year(fields.get("year", ""), line, errors),
            citations=_citations(fields.get("citations", fields.get("citation_count", "")), line, errors),
            url=_http_url(fields.get("url", ""), "url", line, errors), abstract=_clean_tex(fields.get("abstract", "")), line=line,
            extra={"bibtex_key": key},
        )
        if arxiv_id:
            record.pdf_url = f"https://arxiv.org/pdf/{arxiv_id}"
        records.append(record)
    if errors:
        raise CandidateListError(sorted(errors))
    if not records:
        raise CandidateListError([(1, "no BibTeX entries found (an entry starts with @article{key, ...)")])
    return records


# ---------------------------------------------------------------------------------------------
# CSV

# Column name (lower case) -> record attribute; the first spelling listed is the documented one.
CSV_COLUMNS: dict[str, str] = {
    "title": "title", "arxiv_id": "arxiv_id", "arxiv": "arxiv_id", "authors": "authors", "author": "authors",
    "venue": "venue", "year": "year", "citations": "citations", "citation_count": "citations",
    "url": "url", "pdf_url": "pdf_url", "pdf": "pdf_url", "abstract": "abstract",
}


def parse_csv(text: str) -> list[CandidateRecord]:
    """A header row naming the columns (title required; arxiv_id, venue, year, citations, url,
    pdf_url, authors, abstract optional; other columns are kept as extra fields)."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise CandidateListError([(1, "the file is empty; the first row must name the columns")]) from None
    except csv.Error as exc:
        raise CandidateListError([(1, f"not valid CSV: {exc}")]) from None
    names = [h.strip().lower() for h in header]
    if "title" not in names and "arxiv_id" not in names and "arxiv" not in names:
        raise CandidateListError([(1, "the header must have a title or arxiv_id column (got: "
                                      + ", ".join(h for h in names if h)[:200] + ")")])
    records: list[CandidateRecord] = []
    errors: list[tuple[int, str]] = []
    try:
        for row in reader:
            number = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(names):
                errors.append((number, f"{len(row)} cells but the header has {len(names)} columns"))
                continue
            record = CandidateRecord(line=number)
            for name, cell in zip(names, row, strict=True):
                cell = cell.strip()
                attr = CSV_COLUMNS.get(name)
                if attr is None:
                    if name and cell:
                        record.extra[name] = cell[:500]
                elif attr == "year":
                    record.year = _year(cell, number, errors)
                elif attr == "citations":
                    record.citations = _citations(cell, number, errors)
                elif attr == "arxiv_id" and cell:
                    arxiv_id = parse_arxiv_id(cell)
                    if arxiv_id is None:
                        errors.append((number, f"arxiv_id {cell[:60]!r} is not an arXiv id"))
                    record.arxiv_id = arxiv_id or ""
                elif attr in ("url", "pdf_url"):
                    setattr(record, attr, _http_url(cell, name, number, errors))
                elif attr == "venue":
                    record.venue_raw = cell
                    record.venue = normalise_venue(cell) if cell else ""
                else:
                    setattr(record, attr, cell)
            if not record.title and not record.arxiv_id:
                errors.append((number, "the row has neither a title nor an arXiv id"))
                continue
            if record.arxiv_id and not record.pdf_url:
                record.pdf_url = f"https://arxiv.org/pdf/{record.arxiv_id}"
            records.append(record)
    except csv.Error as exc:
        errors.append((reader.line_num, f"not valid CSV: {exc}"))
    if errors:
        raise CandidateListError(errors)
    return records


def parse_candidates(text: str, fmt: str) -> list[CandidateRecord]:
    """Parse a list in ``fmt`` ('arxiv', 'bibtex', 'csv'); duplicates inside the list are merged
    (the first occurrence wins)."""
    parsers = {"arxiv": parse_arxiv_list, "bibtex": parse_bibtex, "csv": parse_csv}
    if fmt not in parsers:
        raise CandidateListError([(0, f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")])
    if "\x00" in text:
        raise CandidateListError([(1, "the file is binary, not a text list")])
    seen: set[str] = set()
    unique: list[CandidateRecord] = []
    for record in parsers[fmt](text):
        if record.key() not in seen:
            seen.add(record.key())
            unique.append(record)
    return unique


def guess_format(name: str, text: str) -> str:
    """From the file name, else the content: BibTeX starts with @, CSV has a comma header."""
    lowered = name.lower()
    if lowered.endswith((".bib", ".bibtex")):
        return "bibtex"
    if lowered.endswith(".csv"):
        return "csv"
    if re.search(r"^\s*@\s*\w+\s*[{(]", text, re.MULTILINE):
        return "bibtex"
    first = text.lstrip().split("\n", 1)[0].lower()
    return "csv" if "," in first and "title" in first else "arxiv"


def filter_candidates(records: list[CandidateRecord], rule: CandidateFilter) -> tuple[list[CandidateRecord],
                                                                                     list[tuple[CandidateRecord, str]]]:
    """(kept, [(dropped, why)])."""
    kept: list[CandidateRecord] = []
    dropped: list[tuple[CandidateRecord, str]] = []
    for record in records:
        reason = rule.reason_to_drop(record)
        if reason is None:
            kept.append(record)
        else:
            dropped.append((record, reason))
    return kept, dropped
