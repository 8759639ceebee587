"""Reading agent trajectories from the files other tools write, and our own JSONL format.

Pure Python (no Django): the import service, the management command, the worker and the tests
all call the same functions.

    from apps.trajectories.formats import read_trajectories, write_klong_jsonl

    reader = read_trajectories(path, skip_bad=True)   # detects the format from the file's start
    for trajectory in reader:                          # one ParsedTrajectory per run, streamed
        ...
    reader.format, reader.problems                     # "swe-agent", [Problem(position, message)]

Formats (names returned by detect_format and kept in ParsedTrajectory.format):

    klong-jsonl        our own JSONL, specified below (a header line, then one line per turn)
    openai-chat        JSON: a message list, {"messages": [...]}, or a list of such objects
    openai-chat-jsonl  JSONL: one {"messages": [...]} object per line
    inspect-ai-eval    Inspect AI .eval zip archive; one run per sample member
    inspect-ai-json    Inspect AI JSON log; one run per sample, samples streamed
    swe-agent          SWE-agent .traj (history[]; trajectory[] is skipped unread)
    mini-swe-agent     mini-swe-agent v1 / v1.1 .traj.json, or a bare message list *.traj.json
    openhands          OpenHands V0 or V1 event list (bare or under trajectory/history/events)
    openhands-jsonl    OpenHands evaluation output.jsonl: one instance per line
    harbor-atif        Harbor ATIF trajectory.json (v1.x)
    codex-cli          Codex CLI session rollout JSONL (~/.codex/sessions/.../rollout-*.jsonl)

Turns. Every message or step in the input becomes a turn, in order; empty content is kept as
empty text. Roles are system, user, assistant and tool; "developer" becomes system,
"function" / "ipython" tool, "model" assistant, and any other role (mini-swe-agent's "exit")
becomes user, a turn the model sees but is never trained on. source_role keeps the original.
Reasoning (content parts of type reasoning / thinking, reasoning_content fields, the
provider response a scaffold logged) goes to turn.reasoning, not the text. A content part that
is a tool call (tool_call, tool_use, function_call) becomes a tool call of the turn, merged
with the message's tool_calls (once when it is in both), never text. Tool calls are
{"id", "name", "arguments"}. Three formats map records to turns other than one to one, all
documented in their modules: a Harbor ATIF step yields its own turn plus one turn per
observation result, and OpenHands bookkeeping events the model never sees (agent state
changes, null events) are counted in meta["skipped_events"] instead of becoming turns. Codex
rollouts read the model's items and leave out the terminal events that repeat them (codex.py).

Our own format, klong-jsonl (write_klong_jsonl writes it, the reader reads it back exactly).
One JSON object per line (UTF-8). A header line starts a trajectory; the turn lines after it,
in order, are its turns; the next header line starts the next trajectory, so one file can hold
a whole trajectory set.

Header line (only "klong_trajectory" is required):

    {"klong_trajectory": 1, "source_format": "mini-swe-agent", "source_format_version": "",
     "source_name": "run.traj.json", "model": "deepseek-chat", "scaffold": "mini-swe-agent",
     "task": "django__django-13265", "title": "", "score": 0.5, "paper": "",
     "started_at": "2026-01-05T10:00:00+00:00", "ended_at": null, "end_state": "submitted", "meta": {}}

  end_state is one of submitted, timed_out, cancelled, error, or null; score a number or null;
  title what the list shows ("" = the task). Unknown header keys
  are kept in the trajectory's meta, so later exporters can add fields without a new version.

Turn line (only "role" is required; absent keys take the defaults shown):

    {"role": "assistant", "text": "", "reasoning": "", "tool_calls": [], "tool_call_id": null,
     "timestamp": null, "source_role": "<role>", "meta": {}}

  role is system, user, assistant or tool; a tool call is {"id", "name", "arguments"};
  timestamp is ISO 8601.

Errors. Detection problems raise TrajectoryFormatError at once. A malformed line or record
raises TrajectoryFormatError while iterating, with its position: "line 7" in JSONL, a JSON
path such as "$.messages[3]" in a document, the member name in a .eval archive. With
skip_bad=True the record (the whole run it belongs to) is skipped and listed in
reader.problems instead. A syntax error in a JSON document ends the reading of that file,
since nothing after it can be located.

Memory. JSONL is read line by line, .eval archives one member at a time, Inspect JSON logs
one sample at a time, and every JSON document through ijson (a requirement) with the repeated parts
(SWE-agent's per-step message copies, Inspect's model-call inputs) skipped unread. One run's
turns are held in memory, nothing more.

Limits (read_trajectories(limits=...), apps.core.untrusted.InputLimits; the settings' values by
default). JSON nested deeper than KLONG_MAX_JSON_DEPTH is a record error at the path or line where
it happens; the streaming reader's memory is linear in the depth. .eval members are counted as
they are decompressed: KLONG_MAX_UNPACKED_MEMBER_BYTES per member, KLONG_MAX_UNPACKED_BYTES in all.
"""

from __future__ import annotations

from .base import (
    END_STATES,
    ROLES,
    ParsedTrajectory,
    ParsedTurn,
    Problem,
    TrajectoryFormatError,
)
from .detect import FORMATS, detect_format
from .klong import write_klong_jsonl
from .reader import TrajectoryReader, read_trajectories

__all__ = [
    "END_STATES",
    "FORMATS",
    "ROLES",
    "ParsedTrajectory",
    "ParsedTurn",
    "Problem",
    "TrajectoryFormatError",
    "TrajectoryReader",
    "detect_format",
    "read_trajectories",
    "write_klong_jsonl",
]
