"""Streaming JSON reading on top of ijson.

Agent logs repeat themselves: SWE-agent stores the whole history again in every step, Inspect
stores every model call's full input in its events. Read whole, a long run costs memory
quadratic in its length. These helpers build a document from ijson events while leaving out
the subtrees a reader does not need, and hand out the elements of one array (Inspect's
samples) one at a time, so a file is never held in memory whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import IO, Any

import ijson

from apps.core.untrusted import DEFAULT_MAX_JSON_DEPTH, json_depth_message

JsonPath = tuple[str | int, ...]
SkipRule = Callable[[JsonPath], bool]

_MISSING = object()


class JsonSyntaxError(Exception):
    """Malformed or truncated JSON; path is where the parser was when it failed."""

    def __init__(self, message: str, path: JsonPath) -> None:
        self.message = message
        self.path = path
        super().__init__(message)


class _Frame:
    __slots__ = ("container", "key")

    def __init__(self, container: dict[str, Any] | list[Any]) -> None:
        self.container = container
        # The pending key of a map, or the index of the next element of an array.
        self.key: str | int = 0 if isinstance(container, list) else ""

    def add(self, value: Any) -> None:
        if isinstance(self.container, list):
            self.container.append(value)
            self.key = int(self.key) + 1
        else:
            self.container[str(self.key)] = value

    def skip_one(self) -> None:
        if isinstance(self.container, list):
            self.key = int(self.key) + 1


def _path(frames: list[_Frame]) -> JsonPath:
    """The path of the value the innermost frame is reading. Frames keep only their own key,
    never a copy of the path: built on demand, memory stays linear in the depth."""
    return tuple(frame.key for frame in frames)


class _WithoutBom:
    """A binary file with a leading UTF-8 byte order mark (Windows editors add one) dropped."""

    def __init__(self, fp: IO[bytes]) -> None:
        self._fp = fp
        head = fp.read(3)
        self._head = b"" if head == b"\xef\xbb\xbf" else head

    def read(self, size: int | None = -1) -> bytes:
        if size == 0:
            return b""
        if not self._head:
            return self._fp.read(size)
        head, self._head = self._head, b""
        if size is None or size < 0:
            return head + self._fp.read()
        return head + self._fp.read(max(0, size - len(head)))


def _clean_message(exc: Exception) -> str:
    text = str(exc)
    if text.startswith(("b'", 'b"')):
        text = text[2:]
    first = text.replace("\\n", "\n").splitlines()[0].strip() if text.strip() else "invalid JSON"
    if "premature EOF" in first:
        return "the JSON ends too early (truncated file?)"
    return first.removeprefix("parse error: ").removeprefix("lexical error: ")


def iter_document(
    fp: IO[bytes],
    *,
    skip: SkipRule | None = None,
    stream: JsonPath | None = None,
    max_depth: int = DEFAULT_MAX_JSON_DEPTH,
) -> Iterator[tuple[str, Any, Any]]:
    """Parse one JSON document from a binary file.

    Yields ("item", index, value) for each element of the array at path `stream` as soon as
    the element is complete (those elements are not kept in the document); when `stream` is
    given, also ("top", key, value) as each member of a top-level object completes, so a
    reader knows the header fields written before the array. Ends with ("root", None,
    document). A value whose path satisfies `skip` is left out entirely; in an array it still
    counts for the indices of its neighbours. Raises JsonSyntaxError, also for nesting deeper
    than `max_depth` (skipped subtrees included).
    """
    frames: list[_Frame] = []
    skip_depth = 0
    root: Any = _MISSING
    try:
        for event, value in ijson.basic_parse(_WithoutBom(fp), use_float=True):
            if skip_depth:
                if event in ("start_map", "start_array"):
                    skip_depth += 1
                    if len(frames) + skip_depth > max_depth:
                        raise _too_deep(frames, max_depth)
                elif event in ("end_map", "end_array"):
                    skip_depth -= 1
                    if not skip_depth:
                        frames[-1].skip_one()
                continue
            if event == "map_key":
                frames[-1].key = value
                continue
            if event in ("end_map", "end_array"):
                done = frames.pop().container
            else:
                if skip is not None and frames and skip(_path(frames)):
                    if event in ("start_map", "start_array"):
                        skip_depth = 1
                    else:
                        frames[-1].skip_one()
                    continue
                if event in ("start_map", "start_array"):
                    if len(frames) >= max_depth:
                        raise _too_deep(frames, max_depth)
                    frames.append(_Frame({} if event == "start_map" else []))
                    continue
                done = value
            if not frames:
                root = done
                continue
            parent = frames[-1]
            if _is_stream(frames, stream):
                index = int(parent.key)
                parent.key = index + 1
                yield "item", index, done
            else:
                parent.add(done)
                if stream is not None and len(frames) == 1 and isinstance(parent.container, dict):
                    yield "top", parent.key, done
    except ijson.JSONError as exc:
        raise JsonSyntaxError(_clean_message(exc), _path(frames)) from None
    if root is _MISSING:
        raise JsonSyntaxError("the file holds no JSON value", ())
    yield "root", None, root


def _is_stream(frames: list[_Frame], stream: JsonPath | None) -> bool:
    """Whether the innermost frame is the array at path `stream` (whose items are handed out)."""
    return (
        stream is not None
        and len(frames) == len(stream) + 1
        and isinstance(frames[-1].container, list)
        and _path(frames[:-1]) == stream
    )


def _too_deep(frames: list[_Frame], max_depth: int) -> JsonSyntaxError:
    return JsonSyntaxError(json_depth_message(max_depth), _path(frames))


def load_document(
    fp: IO[bytes], *, skip: SkipRule | None = None, max_depth: int = DEFAULT_MAX_JSON_DEPTH
) -> Any:
    """The whole document, less the skipped subtrees."""
    for kind, _index, value in iter_document(fp, skip=skip, max_depth=max_depth):
        if kind == "root":
            return value
    raise AssertionError("iter_document always ends with the root")  # pragma: no cover
