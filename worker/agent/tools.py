"""The agent's tools (PaperBench BasicAgent's set): bash, python, read_file_chunk, write_file,
search_files, submit. Each runs inside the sandbox; arguments are untrusted model output.

Every argument reaches a shell only through ``shlex.quote`` and after ``--``, so a file name
such as ``x; rm -rf /`` or ``-rf`` is a file name; paths are whatever the sandbox lets them be
(the sandbox is the boundary: read-only paper, writable submission, nothing of the host's).
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from dataclasses import dataclass
from typing import Any

from apps.core.untrusted import clip_text, loads_json
from worker.sandbox import Sandbox, SandboxError

MAX_OUTPUT_CHARS = 12_000

TOOL_SPECS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "bash", "description": "Run a shell command in the sandbox (working folder: the submission).",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}},
    {"type": "function", "function": {
        "name": "python", "description": "Run a Python 3 program in the sandbox; prints its output.",
        "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}}},
    {"type": "function", "function": {
        "name": "read_file_chunk", "description": "Read lines of a text file, numbered.",
        "parameters": {"type": "object", "properties": {
            "file": {"type": "string"}, "start_line": {"type": "integer", "default": 1},
            "max_lines": {"type": "integer", "default": 50}}, "required": ["file"]}}},
    {"type": "function", "function": {
        "name": "write_file", "description": "Create or overwrite a file (relative paths: in the submission).",
        "parameters": {"type": "object", "properties": {
            "file": {"type": "string"}, "content": {"type": "string"}}, "required": ["file", "content"]}}},
    {"type": "function", "function": {
        "name": "search_files", "description": "Find lines containing a text in the files under a folder.",
        "parameters": {"type": "object", "properties": {
            "pattern": {"type": "string"}, "path": {"type": "string", "default": "."}}, "required": ["pattern"]}}},
    {"type": "function", "function": {
        "name": "submit", "description": "Finish: the submission folder as it is now is your answer.",
        "parameters": {"type": "object", "properties": {"end_message": {"type": "string"}}, "required": []}}},
]
TOOL_NAMES = tuple(spec["function"]["name"] for spec in TOOL_SPECS)


@dataclass
class ToolOutcome:
    output: str
    submitted: bool = False
    exit_code: int | None = None
    timed_out: bool = False
    changes_files: bool = False  # might have written to the submission: snapshot after it


def clip(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    """Head and tail of a long output, with how much was cut between them."""
    return clip_text(text, limit)


def parse_arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if raw in (None, ""):
        return {}
    value = loads_json(raw)  # model output: nesting limited like every untrusted JSON
    if not isinstance(value, dict):
        raise ValueError("the arguments are not a JSON object")
    return value


def _int(args: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = args.get(name, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    return min(max(number, low), high)


def _str(args: dict[str, Any], name: str, default: str | None = None) -> str:
    value = args.get(name, default)
    if value is None:
        raise ValueError(f"missing argument {name!r}")
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    if "\x00" in value:
        raise ValueError(f"{name} contains a NUL byte")
    return value


def _path(sandbox: Sandbox, raw: str) -> str:
    return raw if raw.startswith("/") else f"{sandbox.spec.submission_dir}/{raw}"


def _exec_text(result) -> str:
    parts = []
    if result.stdout:
        parts.append(result.stdout)
    if result.stderr:
        parts.append(f"[stderr]\n{result.stderr}")
    if result.timed_out:
        parts.append(f"[timed out after {result.duration_s:.0f} s; the command was killed]")
    parts.append(f"[exit code {result.exit_code}]")
    return clip("\n".join(parts))


def run_tool(sandbox: Sandbox, name: str, raw_arguments: Any, timeout_s: float) -> ToolOutcome:
    """Run one tool call; any problem comes back as the tool's output for the model to read."""
    if name not in TOOL_NAMES:
        return ToolOutcome(f"Unknown tool {name!r}. Tools: {', '.join(TOOL_NAMES)}.")
    try:
        args = parse_arguments(raw_arguments)
        return _dispatch(sandbox, name, args, timeout_s)
    except (ValueError, json.JSONDecodeError) as exc:
        return ToolOutcome(f"Bad arguments for {name}: {exc}")
    except SandboxError as exc:
        return ToolOutcome(f"{name} failed: {exc}", changes_files=name == "write_file")


def _dispatch(sandbox: Sandbox, name: str, args: dict[str, Any], timeout_s: float) -> ToolOutcome:
    if name == "bash":
        result = sandbox.exec(_str(args, "cmd"), timeout_s=timeout_s)
        return ToolOutcome(_exec_text(result), exit_code=result.exit_code, timed_out=result.timed_out,
                           changes_files=True)
    if name == "python":
        script = f"/tmp/klong-tool-{uuid.uuid4().hex[:12]}.py"
        sandbox.write_file(script, _str(args, "code").encode())
        result = sandbox.exec(f"python3 {shlex.quote(script)}; code=$?; rm -f {shlex.quote(script)}; exit $code",
                              timeout_s=timeout_s)
        return ToolOutcome(_exec_text(result), exit_code=result.exit_code, timed_out=result.timed_out,
                           changes_files=True)
    if name == "read_file_chunk":
        path = _path(sandbox, _str(args, "file"))
        start = _int(args, "start_line", 1, 1, 10**9)
        count = _int(args, "max_lines", 50, 1, 2000)
        program = f'NR>={start} && NR<{start + count} {{ printf "%d: %s\\n", NR, $0 }} NR>={start + count} {{ exit }}'
        result = sandbox.exec(f"test -f {shlex.quote(path)} && awk {shlex.quote(program)} < {shlex.quote(path)}",
                              timeout_s=min(timeout_s, 60))
        if result.exit_code != 0:
            return ToolOutcome(f"Cannot read {path}: not a readable file. {result.stderr.strip()[:300]}",
                               exit_code=result.exit_code)
        return ToolOutcome(clip(result.stdout) or f"(no lines from line {start} on)", exit_code=0)
    if name == "write_file":
        path = _path(sandbox, _str(args, "file"))
        content = _str(args, "content")
        sandbox.write_file(path, content.encode())
        return ToolOutcome(f"Wrote {len(content.encode())} bytes to {path}.", changes_files=True)
    if name == "search_files":
        pattern = _str(args, "pattern")
        if not pattern:
            raise ValueError("pattern is empty")
        path = _path(sandbox, _str(args, "path", "."))
        result = sandbox.exec(
            f"grep -rnIF -e {shlex.quote(pattern)} -- {shlex.quote(path)} | head -n 200", timeout_s=min(timeout_s, 120)
        )
        return ToolOutcome(clip(result.stdout) or "No matches.", exit_code=result.exit_code)
    # submit
    message = args.get("end_message", "")
    return ToolOutcome(f"Submitted. {message if isinstance(message, str) else ''}".strip(), submitted=True)


# ----------------------------------------------------------------------- tool calls in text

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)


def _call_from_json(data: Any) -> dict[str, Any] | None:
    if not isinstance(data, dict):
        return None
    function = data.get("function") if isinstance(data.get("function"), dict) else data
    name = function.get("name")
    if not isinstance(name, str) or name not in TOOL_NAMES:
        return None
    arguments = function.get("arguments", function.get("parameters", {}))
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {"id": data.get("id") or f"call_{uuid.uuid4().hex[:12]}", "type": "function",
            "function": {"name": name, "arguments": arguments}}


def _parse_call(raw: str) -> dict[str, Any] | None:
    try:
        return _call_from_json(loads_json(raw))
    except ValueError:
        return None


def _call_lines(text: str) -> list[tuple[str, dict[str, Any] | None]]:
    """Each line with the call it is, if it is a JSON call object on its own."""
    rows = []
    for line in text.splitlines():
        stripped = line.strip()
        is_object = stripped.startswith("{") and stripped.endswith("}")
        rows.append((line, _parse_call(stripped) if is_object else None))
    return rows


def calls_from_text(text: str) -> list[dict[str, Any]]:
    """Tool calls written in a model's text, for models without native tool calling:
    ``<tool_call>{...}</tool_call>`` blocks (Hermes/Qwen style), else lines that are a JSON call
    object (how recorded turns are rendered for training: apps/trajectories/tokens.turn_text)."""
    tagged = [call for block in _TAGGED.findall(text or "") if (call := _parse_call(block))]
    if tagged:
        return tagged
    return [call for _, call in _call_lines(text or "") if call]


def strip_calls(text: str) -> str:
    """The text of a turn without the tool calls written in it (they are kept as tool_calls)."""
    text = text or ""
    if _TAGGED.search(text):
        return _TAGGED.sub("", text).strip()
    return "\n".join(line for line, call in _call_lines(text) if not call).strip()
