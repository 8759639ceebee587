"""Which submission files a judge reads for a leaf: a simple, documented relevance score.

PaperBench asks the model itself to rank files, which costs one extra call per leaf. Here the
rank is computed: the requirement's terms (lower-cased words of 3+ characters, camelCase and
snake_case split, common English words dropped) are matched against each file's path and text:

    relevance = 2 * |terms in the path| + |terms in the text|

Ties go to shallower paths, then alphabetical order, so the choice is deterministic and a
judge run can be reproduced from what is stored. Pure Python.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from apps.judging.judge.submission import Submission, SubmissionFile

_STOPWORD_TEXT = """the and for are but not you all any can had her was one our out has have his how its may new now
    old see two way who did get let put say she too use that with this from they will would there their
    what about which when make like time just know take into year your some could them than then these
    other more also been were only should must does each such used using given code paper submission
    implemented implementation correctly correct shown show results result file files run running"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORD = re.compile(r"[a-z][a-z0-9]{2,}")
INDEX_BYTES = 64 * 1024  # how much of each file is indexed for ranking (its head)
CACHE_BUDGET_CHARS = 64 * 1024 * 1024  # file texts kept in memory for the leaves; beyond it, re-read


def terms(text: str) -> set[str]:
    text = _CAMEL.sub(r"\1 \2", text).lower().replace("_", " ")
    return {w for w in _WORD.findall(text) if w not in STOPWORDS}


@dataclass(frozen=True, slots=True)
class RankedFile:
    path: str
    relevance: int


class FileIndex:
    """Terms and texts of every readable file, read once per judge run and shared by all leaf
    threads (a 2,000-leaf tree would otherwise re-read the same files 20,000 times)."""

    def __init__(self, submission: Submission, max_chars: int = INDEX_BYTES) -> None:
        self.submission = submission
        self._path_terms: dict[str, set[str]] = {}
        self._text_terms: dict[str, set[str]] = {}
        self._texts: dict[str, str | None] = {}
        self._max_chars = max(max_chars, INDEX_BYTES)
        cached = 0
        for f in submission.files():
            self._path_terms[f.path] = terms(f.path.replace("/", " ").replace(".", " "))
            text = submission.read_text(f.path, self._max_chars)
            self._text_terms[f.path] = terms(text[:INDEX_BYTES]) if text else set()
            if text is None or cached + len(text) <= CACHE_BUDGET_CHARS:
                self._texts[f.path] = text
                cached += len(text or "")

    def text(self, path: str, max_chars: int) -> str | None:
        """A file's text, at most ``max_chars`` characters (with a marker when cut)."""
        if path in self._texts and max_chars <= self._max_chars:
            text = self._texts[path]
            if text is None or len(text) <= max_chars:
                return text
            return text[:max_chars] + f"\n[... truncated at {max_chars} characters ...]"
        return self.submission.read_text(path, max_chars)

    def rank(self, requirement: str, files: Iterable[SubmissionFile]) -> list[RankedFile]:
        wanted = terms(requirement)
        ranked = [
            RankedFile(
                f.path,
                2 * len(wanted & self._path_terms.get(f.path, set())) + len(wanted & self._text_terms.get(f.path, set())),
            )
            for f in files
        ]
        ranked.sort(key=lambda r: (-r.relevance, r.path.count("/"), r.path))
        return ranked
