"""Limits on untrusted input: how deep JSON may nest, how far an archive may expand, how long
one stored text may be.

Pure Python (no Django import at module level): the trajectory readers, the rubric loader,
the submission extractor, the paper zip reader, the agent and the API's JSON parser all use
these, with the values the settings give them when Django is set up (``InputLimits.current()``)
and the defaults below otherwise. Every refusal is an ``InputLimitError`` whose message names
the limit and the variable that sets it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings

from apps.core.domain import Invalid, TooLarge

DEFAULT_MAX_JSON_DEPTH = 64
DEFAULT_MAX_UNPACKED_BYTES = 1 << 30
DEFAULT_MAX_UNPACKED_MEMBER_BYTES = 256 << 20
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class InputLimits:
    """json_depth: levels of nested arrays/objects; unpacked_bytes: decompressed bytes of one
    archive in total; unpacked_member_bytes: of one member (file) of it."""

    json_depth: int = DEFAULT_MAX_JSON_DEPTH
    unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES
    unpacked_member_bytes: int = DEFAULT_MAX_UNPACKED_MEMBER_BYTES

    @classmethod
    def current(cls) -> InputLimits:
        """The configured limits (KLONG_MAX_JSON_DEPTH, KLONG_MAX_UNPACKED_BYTES,
        KLONG_MAX_UNPACKED_MEMBER_BYTES), or the defaults outside a Django process."""

        if not settings.configured:
            return cls()
        return cls(
            json_depth=getattr(settings, "KLONG_MAX_JSON_DEPTH", DEFAULT_MAX_JSON_DEPTH),
            unpacked_bytes=getattr(settings, "KLONG_MAX_UNPACKED_BYTES", DEFAULT_MAX_UNPACKED_BYTES),
            unpacked_member_bytes=getattr(
                settings, "KLONG_MAX_UNPACKED_MEMBER_BYTES", DEFAULT_MAX_UNPACKED_MEMBER_BYTES
            ),
        )


class InputLimitError(Invalid, ValueError):
    """Input beyond a limit; the message names the limit and its variable."""


class JsonTooDeep(InputLimitError):
    """line and column: where the level past the limit opens (0 when unknown)."""

    def __init__(self, limit: int, line: int, column: int) -> None:
        self.limit, self.line, self.column = limit, line, column
        where = f" at line {line}, column {column}" if line else ""
        super().__init__(f"{json_depth_message(limit)}{where}")


class UnpackedTooLarge(TooLarge, InputLimitError):
    def __init__(self, what: str, limit: int, setting: str) -> None:
        super().__init__(f"{what} expands past the limit of {limit:,} bytes ({setting})")


def json_depth_message(limit: int) -> str:
    return f"JSON nested deeper than {limit} levels (KLONG_MAX_JSON_DEPTH)"


# ------------------------------------------------------------------------------- JSON depth


def loads_json(data: bytes | str, limit: int | None = None, **kwargs: Any) -> Any:
    """json.loads with a depth limit (KLONG_MAX_JSON_DEPTH when None): JsonTooDeep (a
    ValueError, with line and column) instead of a RecursionError, or of a value so deep that
    whatever walks it next fails."""
    limit = limit or InputLimits.current().json_depth
    try:
        value = json.loads(data, **kwargs)
    except RecursionError:
        raise JsonTooDeep(limit, *_where_too_deep(data, limit)) from None
    if json_depth(value, stop_above=limit) > limit:
        raise JsonTooDeep(limit, *_where_too_deep(data, limit))
    return value


def json_depth(value: Any, stop_above: int | None = None) -> int:
    """Levels of nested lists and dicts in a parsed value (0 for a scalar), level by level
    without recursion; stops counting once past ``stop_above``."""
    level = [value] if isinstance(value, list | dict) else []
    depth = 0
    while level:
        depth += 1
        if stop_above is not None and depth > stop_above:
            break
        level = [
            child
            for container in level
            for child in (container.values() if isinstance(container, dict) else container)
            if isinstance(child, list | dict)
        ]
    return depth


# A JSON string (escapes included) or one bracket: brackets inside strings never count.
_TOKENS_BYTES = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_TOKENS_TEXT = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_OPENERS = frozenset(b"[{") | frozenset("[{")


def _where_too_deep(data: bytes | str, limit: int) -> tuple[int, int]:
    """Line and column of the bracket that opens level ``limit + 1`` (only run on a refusal)."""
    tokens = _TOKENS_TEXT if isinstance(data, str) else _TOKENS_BYTES
    depth = 0
    for match in tokens.finditer(data):
        char = data[match.start()]
        if char in _OPENERS:
            depth += 1
            if depth > limit:
                return _line_column(data, match.start())
        elif match.end() - match.start() == 1:
            depth -= 1
    return 0, 0


def _line_column(data: bytes | str, offset: int) -> tuple[int, int]:
    newline = "\n" if isinstance(data, str) else b"\n"
    line = data.count(newline, 0, offset) + 1
    return line, offset - (data.rfind(newline, 0, offset) + 1) + 1


# ------------------------------------------------------------------------------- archives


class UnpackBudget:
    """Decompressed bytes of one archive, counted as they are read: per member and in total.

    Declared sizes are checked first (``check_declared``), so a member that claims too much is
    refused before a byte of it is decompressed; the counting catches headers that lie. Bytes
    read between two ``start_member`` calls count for the member started last: in a tar stream
    that includes the headers that follow it, so an oversized hidden header is caught too.
    """

    def __init__(
        self, limits: InputLimits, what: str = "the archive", total_setting: str = "KLONG_MAX_UNPACKED_BYTES"
    ) -> None:
        self.member_limit = limits.unpacked_member_bytes
        self.total_limit = limits.unpacked_bytes
        self.what = what
        self.total_setting = total_setting
        self.total = 0
        self.member = 0
        self.member_name = ""

    @property
    def exhausted(self) -> bool:
        return self.total > self.total_limit

    def start_member(self, name: str) -> None:
        self.member, self.member_name = 0, name

    def check_declared(self, name: str, size: int, total: int | None = None) -> None:
        """Refuse a member whose declared size, or an archive whose declared total, is too large."""
        if size > self.member_limit:
            raise self._member_error(name)
        if total is not None and total > self.total_limit:
            raise self._total_error()

    def count(self, size: int) -> None:
        self.member += size
        self.total += size
        if self.member > self.member_limit:
            raise self._member_error(self.member_name)
        if self.total > self.total_limit:
            raise self._total_error()

    def open(self, fp: IO[bytes], name: str) -> CappedReader:
        """A reader over one member's decompressed stream that counts what it hands out."""
        self.start_member(name)
        return CappedReader(fp, self)

    def _member_error(self, name: str) -> UnpackedTooLarge:
        label = f"{name!r} in {self.what}" if name else f"a member of {self.what}"
        return UnpackedTooLarge(label, self.member_limit, "KLONG_MAX_UNPACKED_MEMBER_BYTES")

    def _total_error(self) -> UnpackedTooLarge:
        return UnpackedTooLarge(self.what[:1].upper() + self.what[1:], self.total_limit, self.total_setting)


class CappedReader:
    """A binary reader that charges every byte to an UnpackBudget. ``read()`` with no size reads
    in chunks, so a bomb stops at the limit instead of being decompressed into memory whole."""

    def __init__(self, fp: IO[bytes], budget: UnpackBudget) -> None:
        self._fp = fp
        self._budget = budget

    def read(self, size: int | None = -1) -> bytes:
        left = size if size is not None and size >= 0 else float("inf")
        chunks = []
        # Chunked even for a large size: a decompressor would otherwise inflate it all first.
        while left > 0 and (chunk := self._fp.read(int(min(left, CHUNK_BYTES)))):
            self._budget.count(len(chunk))
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._fp.close()

    def __enter__(self) -> CappedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------- texts


def clip_text(text: str, limit: int, note: str = "") -> str:
    """Head and tail of a long text, with how much was cut between them (and why, in ``note``)."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    why = f" ({note})" if note else ""
    return f"{text[:head]}\n[... {len(text) - limit} characters cut{why} ...]\n{text[-tail:] if tail else ''}"
