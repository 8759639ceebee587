"""The agent loop (PaperBench's BasicAgent shape): ask the model, run its tool calls in the
sandbox, repeat until it submits, runs out of steps or time, is cancelled, or fails.

- ``chat`` is anything with apps/judging/llm's ``chat(messages, **params) -> ChatResult``: the HTTP
  client (tool calls come back structured) or the local backend (tool calls read from the text).
- Each step's context is the last split window of the run so far (worker/agent/context.py).
- After every tool call that may have written files the submission folder is snapshotted; the
  tool turn records the commit when the folder changed.
- Every turn goes to ``on_turn`` as soon as it exists, so a recorder can store it live.
- The blacklist monitor (apps/trajectories/monitor.py) reads every assistant and tool turn; a
  run that touches an official-code URL is flagged and, by default, stopped.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps.judging.llm.records import LLMError
from apps.trajectories.monitor import blacklist_hits
from worker.agent.context import ContextBuilder, ContextTurn
from worker.agent.tools import TOOL_NAMES, TOOL_SPECS, calls_from_text, run_tool, strip_calls
from worker.sandbox import Sandbox, SandboxError

log = logging.getLogger(__name__)
PAPER_DIR = "/home/paper"
END_STATES = ("submitted", "timed_out", "step_limit", "error", "cancelled")

SYSTEM_PROMPT = """You are an AI researcher reproducing the results of a research paper in a sandbox.
The paper is in {paper_dir} (paper.md, addendum.md when present, instructions.md) and is read-only.
Write your code in {submission_dir}: that folder is your submission. Include a reproduce.sh that runs
your code end to end, and a README.md saying what you did.
You have no internet access unless your instructions say otherwise, and you must not use the paper's
official code.
Tools: bash (run a command), python (run a program), read_file_chunk (read numbered lines of a file),
write_file, search_files, submit (when you are done: the submission folder as it is then is judged).
Call one or more tools in every answer. {call_format}"""
TEXT_CALL_FORMAT = (
    'Write each tool call on its own line as <tool_call>{"name": "bash", "arguments": {"cmd": "ls"}}</tool_call>.'
)
NUDGE = "You did not call a tool. Keep working with the tools, and call submit when the submission is complete."


@dataclass
class AgentTask:
    paper_markdown: str
    addendum: str = ""
    instructions: str = ""
    blacklist: Sequence[str] = ()
    paper_dir: str = PAPER_DIR

    def write_files(self, folder: Path) -> dict[str, str]:
        """Write the paper files into ``folder``; returns the read-only mount for ``SandboxSpec``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "paper.md").write_text(self.paper_markdown, encoding="utf-8")
        if self.addendum:
            (folder / "addendum.md").write_text(self.addendum, encoding="utf-8")
        (folder / "instructions.md").write_text(self.instructions or "Reproduce the paper's main results.",
                                                encoding="utf-8")
        return {str(folder): self.paper_dir}

    def task_message(self) -> str:
        text = (f"Reproduce the paper in {self.paper_dir}/paper.md. Read {self.paper_dir}/instructions.md first"
                + (f" and the addendum {self.paper_dir}/addendum.md" if self.addendum else "") + ".")
        if self.instructions:
            text += f"\n\nInstructions:\n{self.instructions}"
        return text


@dataclass
class AgentConfig:
    max_steps: int = 100
    time_limit_s: float = 3600  # wall clock; the run ends "timed_out" (kept, not dropped)
    l_max: int = 32768  # context budget, same pinned prefix + progressive truncation as training
    tokenizer: Any = None  # for counting; None -> the characters/4 estimate (apps/trajectories/tokens.py)
    tool_timeout_s: float = 600
    temperature: float | None = None
    reserve_tokens: int = 4096  # of l_max, left for the model's answer
    max_tokens: int | None = None  # per answer; None = the endpoint's default
    tool_format: str = "auto"  # "structured" (OpenAI tools), "text" (<tool_call> in text), "auto" by backend
    stop_on_blacklist: bool = True
    history_budget: float = 0.25
    recent_full_turns: int = 4
    decay: float = 0.5

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.time_limit_s <= 0 or self.tool_timeout_s <= 0:
            raise ValueError("max_steps, time_limit_s and tool_timeout_s must be positive")
        if self.tool_format not in ("auto", "structured", "text"):
            raise ValueError("tool_format is auto, structured or text")
        if self.reserve_tokens >= self.l_max:
            self.reserve_tokens = self.l_max // 4  # a small l_max (tests, tiny models) keeps a window


@dataclass
class AgentTurn:
    index: int
    role: str  # system | user | assistant | tool
    content: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_call_id: str = ""
    started_at: float = 0.0  # epoch seconds
    ended_at: float = 0.0
    submission_commit: str | None = None  # the commit after this turn, if it changed the submission
    meta: dict[str, Any] = field(default_factory=dict)  # tool name, exit code, usage, context size
    reasoning: str = ""  # the model's reasoning before this answer, when its endpoint returns it
    # the ids the engine sampled for this answer and their log-probs (an RL policy's, token-in/out)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


@dataclass
class AgentResult:
    turns: list[AgentTurn]
    end_state: str  # submitted | timed_out | step_limit | error | cancelled
    final_commit: str | None
    steps: int
    wall_s: float
    flagged: bool
    error: str = ""
    usage: dict[str, float] = field(default_factory=dict)  # prompt_tokens, completion_tokens, cost_usd, calls
    blacklist_hits: list[dict[str, Any]] = field(default_factory=list)


def _structured(chat: Any, config: AgentConfig) -> bool:
    if config.tool_format != "auto":
        return config.tool_format == "structured"
    backend = getattr(getattr(chat, "config", None), "backend", "")
    return backend == "openai"


def run_agent(chat: Any, sandbox: Sandbox, task: AgentTask, config: AgentConfig,
              on_turn: Callable[[AgentTurn], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> AgentResult:
    """Run one agent to its end; never raises for model or sandbox failures (end_state "error")."""
    started = time.monotonic()
    structured = _structured(chat, config)
    builder = ContextBuilder(config.l_max, config.reserve_tokens, config.tokenizer,
                             history_budget=config.history_budget, recent_full_turns=config.recent_full_turns,
                             decay=config.decay)
    turns: list[AgentTurn] = []
    context: list[ContextTurn] = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "calls": 0}
    hits: list[dict[str, Any]] = []
    state = {"commit": getattr(sandbox, "base_commit", None)}

    def add(role: str, content: str, *, tool_calls: list | None = None, tool_call_id: str = "",
            began: float | None = None, commit: str | None = None, reasoning: str = "",
            sampled: Any = None, **meta: Any) -> AgentTurn:
        now = time.time()
        turn = AgentTurn(len(turns), role, content, list(tool_calls or []), tool_call_id, began or now, now,
                         commit, meta, reasoning, list(getattr(sampled, "token_ids", None) or []),
                         list(getattr(sampled, "logprobs", None) or []))
        turns.append(turn)
        context.append(ContextTurn(role, content, turn.tool_calls, tool_call_id))
        if commit:
            state["commit"] = commit
        if task.blacklist and role in ("assistant", "tool"):
            for hit in blacklist_hits(context[-1].text, list(task.blacklist)):
                hits.append({"turn": turn.index, "url": hit.url, "line": hit.line})
        if on_turn is not None:
            on_turn(turn)
        return turn

    def finish(end_state: str, error: str = "") -> AgentResult:
        return AgentResult(turns, end_state, state["commit"], steps, time.monotonic() - started, bool(hits),
                           error, usage, hits)

    call_format = "Use the tools you are given." if structured else TEXT_CALL_FORMAT
    add("system", SYSTEM_PROMPT.format(paper_dir=task.paper_dir, submission_dir=sandbox.spec.submission_dir,
                                       call_format=call_format))
    add("user", task.task_message())
    steps = 0
    params: dict[str, Any] = {}
    if structured:
        params["tools"] = TOOL_SPECS
    if config.temperature is not None:
        params["temperature"] = config.temperature
    if config.max_tokens:
        params["max_tokens"] = config.max_tokens

    while True:
        if should_stop is not None and should_stop():
            return finish("cancelled")
        if time.monotonic() - started >= config.time_limit_s:
            return finish("timed_out")
        if steps >= config.max_steps:
            return finish("step_limit")
        try:
            messages, rendered = builder.messages(context, structured)
        except ValueError as exc:
            return finish("error", f"the context does not fit l_max={config.l_max}: {exc}")
        began = time.time()
        try:
            answer = chat.chat(messages, **params)
        except LLMError as exc:
            return finish("error", f"model call failed: {exc}")
        steps += 1
        record = answer.record
        usage["prompt_tokens"] += record.prompt_tokens
        usage["completion_tokens"] += record.completion_tokens
        usage["cost_usd"] += record.cost_usd
        usage["calls"] += 1
        calls = _normalise_calls(getattr(answer, "tool_calls", None) or [])
        content = answer.text or ""
        if not calls:
            calls = calls_from_text(content)
            if calls:
                content = strip_calls(content)
        # The reasoning is recorded, never sent back (DeepSeek's API refuses reasoning_content in a request).
        add("assistant", content, tool_calls=calls, began=began, reasoning=getattr(answer, "reasoning", "") or "",
            sampled=answer, context_messages=len(rendered),
            context_tokens=sum(builder.counts[m.turn] for m in rendered if m.turn is not None),
            prompt_tokens=record.prompt_tokens, completion_tokens=record.completion_tokens,
            cost_usd=record.cost_usd, finish_reason=answer.finish_reason)
        if hits and config.stop_on_blacklist:
            return finish("error", f"disqualified: the run touched a blacklisted URL ({hits[0]['url']})")
        if not calls:
            add("user", NUDGE)
            continue
        submitted = False
        for call in calls:
            name = call["function"]["name"]
            left = config.time_limit_s - (time.monotonic() - started)
            if left <= 0:
                return finish("timed_out")
            tool_began = time.time()
            try:
                outcome = run_tool(sandbox, name, call["function"].get("arguments"),
                                   timeout_s=min(config.tool_timeout_s, max(1.0, left)))
                if getattr(sandbox, "closed", False):  # run_tool reports a dead sandbox as the tool's output
                    raise SandboxError(outcome.output)
                commit = sandbox.snapshot(f"turn {len(turns)}: {name}") if outcome.changes_files else None
            except SandboxError as exc:  # the sandbox itself is gone (wall clock, cancel, engine failure)
                add("tool", f"{name} failed: {exc}", tool_call_id=call["id"], began=tool_began, tool=name)
                if should_stop is not None and should_stop():
                    return finish("cancelled")
                if getattr(sandbox, "closed", False):
                    return finish("timed_out" if time.monotonic() - started >= config.time_limit_s else "error",
                                  f"the sandbox is gone: {exc}")
                continue
            add("tool", outcome.output, tool_call_id=call["id"], began=tool_began, commit=commit, tool=name,
                exit_code=outcome.exit_code, timed_out=outcome.timed_out)
            if hits and config.stop_on_blacklist:
                return finish("error", f"disqualified: the run touched a blacklisted URL ({hits[0]['url']})")
            if outcome.submitted:
                submitted = True
                break
            if should_stop is not None and should_stop():
                return finish("cancelled")
        if submitted:
            return finish("submitted")


def _normalise_calls(raw: Sequence[Any]) -> list[dict[str, Any]]:
    """OpenAI-shaped calls with an id, a known shape and string arguments."""
    calls = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        function = item.get("function") if isinstance(item.get("function"), dict) else {}
        name = function.get("name") or ""
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        calls.append({"id": str(item.get("id") or f"call_{uuid.uuid4().hex[:12]}"), "type": "function",
                      "function": {"name": str(name), "arguments": arguments}})
    return calls


__all__ = ["END_STATES", "TOOL_NAMES", "AgentConfig", "AgentResult", "AgentTask", "AgentTurn", "run_agent"]
