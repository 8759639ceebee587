"""read_trajectories: detect a file's format and stream its runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from apps.core.untrusted import InputLimits

from .atif import read_atif
from .base import (
    ParsedTrajectory,
    Problem,
    ReadContext,
    TrajectoryFormatError,
    fill_times_from_turns,
)
from .chat import read_openai_chat, read_openai_chat_jsonl
from .codex import read_codex
from .detect import detect_format
from .inspect_ai import read_inspect_eval, read_inspect_json
from .klong import read_klong_jsonl
from .openhands import read_openhands, read_openhands_jsonl
from .swe_agent import read_mini_swe_agent, read_swe_agent

_READERS: dict[str, Callable[[ReadContext], Iterator[ParsedTrajectory]]] = {
    "klong-jsonl": read_klong_jsonl,
    "openai-chat": read_openai_chat,
    "openai-chat-jsonl": read_openai_chat_jsonl,
    "inspect-ai-eval": read_inspect_eval,
    "inspect-ai-json": read_inspect_json,
    "swe-agent": read_swe_agent,
    "mini-swe-agent": read_mini_swe_agent,
    "openhands": read_openhands,
    "openhands-jsonl": read_openhands_jsonl,
    "harbor-atif": read_atif,
    "codex-cli": read_codex,
}


class TrajectoryReader(Iterator[ParsedTrajectory]):
    """Iterates over the runs in one file, one at a time.

    format: the format used (detected unless given). problems: the records skipped so far
    (only with skip_bad=True; complete once iteration has ended). Without skip_bad the first
    bad record raises TrajectoryFormatError, so a caller that wants all-or-nothing imports
    writes inside a transaction and lets the error roll it back.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        skip_bad: bool = False,
        format: str | None = None,
        limits: InputLimits | None = None,
    ) -> None:
        self.path = Path(path)
        if format is not None and format not in _READERS:
            raise TrajectoryFormatError(
                f"unknown format {format!r}; known: {', '.join(sorted(_READERS))}",
                source=self.path.name,
            )
        self.format = format or detect_format(self.path)
        self._context = ReadContext(self.path, skip_bad=skip_bad, limits=limits)
        self._runs = _READERS[self.format](self._context)

    @property
    def problems(self) -> list[Problem]:
        return self._context.problems

    def __iter__(self) -> TrajectoryReader:
        return self

    def __next__(self) -> ParsedTrajectory:
        trajectory = next(self._runs)
        if self.format != "klong-jsonl":
            # Our own format is authoritative as written; elsewhere fill gaps from the turns.
            fill_times_from_turns(trajectory)
        return trajectory


def read_trajectories(
    path: str | Path,
    *,
    skip_bad: bool = False,
    format: str | None = None,
    limits: InputLimits | None = None,
) -> TrajectoryReader:
    """Detect the file's format (or use `format`) and return an iterator over its runs.

    Detection errors raise at once; record errors raise while iterating, with the record's
    position, unless skip_bad=True, which skips and lists them in reader.problems. `limits`:
    JSON depth and decompressed sizes (the defaults of apps.core.untrusted when None).
    """
    return TrajectoryReader(path, skip_bad=skip_bad, format=format, limits=limits)
