"""Format detection from the start of a file.

Only the first HEAD_BYTES are read (plus the member names of a zip archive), so detecting a
multi-gigabyte log costs nothing. The start of the JSON is parsed as far as it goes into a
sketch: the top-level keys, the keys of the first few elements of each shallow array and a
few shallow scalars. The rules below name the format from that sketch.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ijson

from apps.core.untrusted import JsonTooDeep, loads_json

from .base import TrajectoryFormatError
from .codex import is_rollout_record

HEAD_BYTES = 1 << 20
_ITEMS_KEPT = 5
_JSONL_SUFFIXES = (".jsonl", ".ndjson")

FORMATS: dict[str, str] = {
    "klong-jsonl": "KLong JSONL (our own export format)",
    "openai-chat": "OpenAI-style chat messages (JSON)",
    "openai-chat-jsonl": "OpenAI-style chat records, one per line (JSONL)",
    "inspect-ai-eval": "Inspect AI log archive (.eval)",
    "inspect-ai-json": "Inspect AI log (JSON)",
    "swe-agent": "SWE-agent trajectory (.traj)",
    "mini-swe-agent": "mini-swe-agent trajectory",
    "openhands": "OpenHands event list (JSON)",
    "openhands-jsonl": "OpenHands evaluation output (output.jsonl)",
    "harbor-atif": "Harbor ATIF trajectory",
    "codex-cli": "Codex CLI session (rollout JSONL)",
}


@dataclass
class Sketch:
    """What the start of a JSON value looks like.

    keys: the keys of the maps at each path (array indices written "*"); items: for each array
    path, the key sets of its first few elements; scalars: the first scalar at each path.
    """

    root: str = ""  # "map" or "array"
    keys: dict[tuple[Any, ...], list[str]] = field(default_factory=dict)
    items: dict[tuple[Any, ...], list[set[str]]] = field(default_factory=dict)
    scalars: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    def top(self) -> set[str]:
        return set(self.keys.get((), []))

    def first_item(self, *path: Any) -> set[str]:
        found = self.items.get(tuple(path))
        return found[0] if found else set()


def sketch_json(data: bytes, max_depth: int = 4) -> Sketch:
    """Sketch as much of the JSON in data as parses; a cut-off end is expected and ignored.

    Containers deeper than the sketch looks are only counted, never given a frame: a deeply
    nested head costs no more memory than a flat one.
    """
    sketch = Sketch()
    # Each frame: [is_array, path, pending key or next index, key set when a sketched item]
    frames: list[list[Any]] = []
    unsketched = 0  # levels open below the deepest frame
    try:
        for event, value in ijson.basic_parse(io.BytesIO(data), use_float=True):
            if unsketched:
                if event in ("start_map", "start_array"):
                    unsketched += 1
                elif event in ("end_map", "end_array"):
                    unsketched -= 1
                    if not unsketched and frames[-1][0]:
                        frames[-1][2] += 1
                continue
            if event == "map_key":
                frame = frames[-1]
                frame[2] = value
                if len(frame[1]) < max_depth:
                    sketch.keys.setdefault(frame[1], []).append(value)
                if frame[3] is not None:
                    frame[3].add(value)
                continue
            if event in ("end_map", "end_array"):
                frames.pop()
                if frames and frames[-1][0]:
                    frames[-1][2] += 1
                continue
            path: tuple[Any, ...] = ()
            if frames:
                parent = frames[-1]
                path = (*parent[1], "*" if parent[0] else parent[2])
            if event in ("start_map", "start_array"):
                if len(path) > max_depth:
                    unsketched = 1  # nothing in it is sketched
                    continue
                if not frames:
                    sketch.root = "map" if event == "start_map" else "array"
                keys: set[str] | None = None
                if event == "start_map" and frames and frames[-1][0]:
                    items = sketch.items.setdefault(path[:-1], [])
                    if len(items) < _ITEMS_KEPT:
                        keys = set()
                        items.append(keys)
                frames.append(
                    [event == "start_array", path, 0 if event == "start_array" else "", keys]
                )
                continue
            if len(path) <= max_depth:
                sketch.scalars.setdefault(path, value)
            if frames and frames[-1][0]:
                frames[-1][2] += 1
    except ijson.JSONError:
        pass
    return sketch


def _is_openhands_event(keys: set[str]) -> bool:
    # V1 SDK events carry "kind"; V0 events carry exactly one of "action" / "observation".
    if "role" in keys:
        return False
    if "kind" in keys:
        return True
    return ("action" in keys) != ("observation" in keys)


def _is_swe_agent_step(keys: set[str]) -> bool:
    return {"action", "observation"} <= keys or {"response", "thought"} <= keys


def _classify_document(sketch: Sketch, name: str) -> str | None:
    top = sketch.top()
    if sketch.root == "array":
        first = sketch.first_item()
        if "role" in first:
            # A bare message list: mini-swe-agent writes exactly this to *.traj.json.
            return "mini-swe-agent" if name.endswith(".traj.json") else "openai-chat"
        if "messages" in first:
            return "openai-chat"
        if _is_openhands_event(first):
            return "openhands"
        return None
    if sketch.root != "map":
        return None
    schema = sketch.scalars.get(("schema_version",))
    if (isinstance(schema, str) and schema.upper().startswith("ATIF")) or {
        "steps",
        "agent",
        "session_id",
    } <= top:
        return "harbor-atif"
    if "eval" in top and top & {"samples", "plan", "results", "stats", "status", "version"}:
        return "inspect-ai-json"
    if "trajectory" in top and _is_swe_agent_step(sketch.first_item("trajectory")):
        return "swe-agent"
    if "history" in top and ("environment" in top or "trajectory" in top or name.endswith(".traj")):
        return "swe-agent"
    for key in ("trajectory", "history", "events"):
        if key in top and _is_openhands_event(sketch.first_item(key)):
            return "openhands"
    if "messages" in top:
        version = sketch.scalars.get(("trajectory_format",))
        if "info" in top or (isinstance(version, str) and version.startswith("mini-swe-agent")):
            return "mini-swe-agent"
        return "openai-chat"
    return None


def _classify_jsonl(sketch: Sketch) -> str | None:
    top = sketch.top()
    if "klong_trajectory" in top:
        return "klong-jsonl"
    if "history" in top:
        return "openhands-jsonl"
    if "messages" in top:
        return "openai-chat-jsonl"
    if is_rollout_record(top, sketch.scalars.get(("type",))):
        return "codex-cli"
    return None


def _first_line_is_record(head: bytes, start: int) -> bool:
    """True when the first line is a whole JSON value and more data follows: JSONL."""
    end = head.find(b"\n", start)
    if end == -1 or not head[end + 1 :].strip():
        return False
    try:
        loads_json(head[start:end])
    except JsonTooDeep:
        return True  # a record all the same: its reader reports the depth with the line
    except ValueError:
        return False
    return True


def detect_format(path: str | Path) -> str:
    """Name the format of a trajectory file (a key of FORMATS) from its start.

    Raises TrajectoryFormatError with the reason when the file is empty, not JSON, or a JSON
    layout none of the readers knows.
    """
    path = Path(path)
    try:
        with path.open("rb") as fp:
            head = fp.read(HEAD_BYTES)
    except OSError as exc:
        raise TrajectoryFormatError(
            f"cannot read the file: {exc.strerror or exc}", source=path.name
        ) from None
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile as exc:
            raise TrajectoryFormatError(f"damaged zip archive: {exc}", source=path.name) from None
        if (
            "header.json" in names
            or "_journal/start.json" in names
            or any(n.startswith("samples/") for n in names)
        ):
            return "inspect-ai-eval"
        raise TrajectoryFormatError(
            "a zip archive, but not an Inspect AI .eval log (no header.json or samples/)",
            source=path.name,
        )
    body = head.removeprefix(b"\xef\xbb\xbf")
    start = len(body) - len(body.lstrip())
    if start == len(body):
        raise TrajectoryFormatError("the file is empty", source=path.name)
    if body[start : start + 1] not in (b"{", b"["):
        raise TrajectoryFormatError(
            "not JSON or JSONL (the first character is neither '{' nor '[')", source=path.name
        )
    name = path.name.lower()
    if name.endswith(_JSONL_SUFFIXES) or _first_line_is_record(body, start):
        end = body.find(b"\n", start)
        sketch = sketch_json(body[start : end if end != -1 else len(body)])
        found = _classify_jsonl(sketch)
        if found:
            return found
        if "role" in sketch.top():
            raise TrajectoryFormatError(
                "JSONL lines look like single chat messages; put one conversation per line as "
                '{"messages": [...]}, or use the KLong JSONL format',
                source=path.name,
                position="line 1",
            )
        raise TrajectoryFormatError(
            f"unrecognised JSONL record with keys {sorted(sketch.top())[:12]}",
            source=path.name,
            position="line 1",
        )
    sketch = sketch_json(body[start:])
    found = _classify_document(sketch, name)
    if found:
        return found
    if not sketch.root:
        raise TrajectoryFormatError("not valid JSON", source=path.name)
    shape = "object" if sketch.root == "map" else "array"
    shown = sorted(sketch.top()) if sketch.root == "map" else sorted(sketch.first_item())
    raise TrajectoryFormatError(
        f"unrecognised JSON layout ({shape} with keys {shown[:12]})", source=path.name
    )
