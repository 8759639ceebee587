"""What the model sees at each step: the same pinned prefix and progressive truncation as SFT.

The whole run so far is planned with ``apps.trajectories.splitting.plan_split`` (token counts of
every turn, rendered as training renders them: ``apps.trajectories.tokens.turn_text``) and the
model gets the *last* window, rendered with ``render_window``: the pinned prefix (system prompt,
task, the paper-reading steps), the progressively truncated history, then the latest turns
whole. A window of a training run is built by the same calls, so a policy trained on split
trajectories sees the same shapes at run time. ``l_max - reserve_tokens`` is the window size:
the rest is left for the answer.

Two renderings of a window's messages:
- ``text``: every message is {"role", "content"} with the turn's training text (tool calls as
  JSON lines); for local models, whose chat templates see exactly what training saw.
- ``structured``: OpenAI tool-calling shape (assistant ``tool_calls``, ``tool`` messages with
  ``tool_call_id``) for HTTP endpoints, which reject a tool message without its call. A call or
  result whose partner was cut or dropped by the truncation is sent as plain text instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from apps.trajectories.splitting import (
    RenderedMessage,
    SplitConfig,
    SplitError,
    TurnSpec,
    mentions_paper,
    plan_split,
    render_window,
)
from apps.trajectories.tokens import CHARS_PER_TOKEN, MESSAGE_OVERHEAD, EstimateCounter, turn_text


@dataclass
class ContextTurn:
    role: str
    content: str
    tool_calls: list[dict[str, Any]]
    tool_call_id: str = ""

    @property
    def text(self) -> str:
        return turn_text(self.content, "", self.tool_calls)


class Counter:
    """Token counts and cuts: a tokenizer (HF or a ``TokenCounter``) or the characters/4 estimate."""

    def __init__(self, tokenizer: Any = None) -> None:
        self.tokenizer = tokenizer
        if tokenizer is None:
            self._counter: Any = EstimateCounter()
        elif hasattr(tokenizer, "count"):
            self._counter = tokenizer
        else:
            self._counter = None
        self.name = getattr(self._counter, "name", None) or getattr(tokenizer, "name_or_path", "") or "local"

    def count(self, text: str) -> int:
        if self._counter is not None:
            return self._counter.count([text])[0]
        return len(self.tokenizer.encode(text, add_special_tokens=False)) + MESSAGE_OVERHEAD

    def cut(self, text: str, head: int, tail: int) -> tuple[str, str]:
        encode = getattr(self.tokenizer, "encode", None) if self.tokenizer is not None else None
        decode = getattr(getattr(self.tokenizer, "tokenizer", self.tokenizer), "decode", None)
        if encode is not None and decode is not None:
            try:
                ids = encode(text, add_special_tokens=False)
            except TypeError:
                ids = encode(text)
            return decode(ids[:head]), decode(ids[len(ids) - tail:]) if tail else ""
        # the estimate's inverse: CHARS_PER_TOKEN characters a token
        return text[: head * CHARS_PER_TOKEN], text[len(text) - tail * CHARS_PER_TOKEN:] if tail else ""


def plan_context(specs: Sequence[TurnSpec], texts: Sequence[str], config: SplitConfig,
                 cut: Callable[[str, int, int], tuple[str, str]]) -> list[RenderedMessage]:
    """The last window of the run so far, as the split renders it (see the module docstring)."""
    try:
        manifest = plan_split(specs, config)
    except SplitError:
        # A pinned prefix too big for the window: pin only the system prompt and the task.
        base = 0
        while base + 1 < len(specs) and specs[base + 1].role != "assistant":
            base += 1
        manifest = plan_split(specs, replace(config, prefix_end=base))
    if not manifest.windows:  # only the prefix so far (system prompt and task): all of it, whole
        return [RenderedMessage(i, spec.role, texts[i], "prefix", False) for i, spec in enumerate(specs)]
    return render_window(texts, manifest, len(manifest.windows), cut)


class ContextBuilder:
    """Builds the messages of each step. Turns never change once added, so each turn's text,
    count and spec are computed once: a step costs the plan and the render, not a recount."""

    def __init__(self, l_max: int, reserve_tokens: int, tokenizer: Any = None, *, history_budget: float = 0.25,
                 recent_full_turns: int = 4, decay: float = 0.5) -> None:
        window = l_max - reserve_tokens
        if window < 64:
            raise ValueError(f"l_max ({l_max}) minus the reserve for the answer ({reserve_tokens}) is too small")
        self.counter = Counter(tokenizer)
        self.config = SplitConfig(l_max=window, overlap_turns=0, history_budget=history_budget,
                                  recent_full_turns=recent_full_turns, decay=decay,
                                  marker_tokens=max(8, math.ceil(len("[... 1000000 tokens cut ...]") / 4) + 4))
        # per turn, computed once: its training text, token count and split spec
        self.texts: list[str] = []
        self.counts: list[int] = []
        self.specs: list[TurnSpec] = []

    def messages(self, turns: Sequence[ContextTurn], structured: bool) -> tuple[list[dict[str, Any]], list[RenderedMessage]]:
        for i in range(len(self.specs), len(turns)):
            text = turns[i].text
            self.texts.append(text)
            self.counts.append(self.counter.count(text))
            self.specs.append(TurnSpec(i, turns[i].role, max(1, self.counts[i]), False, mentions_paper(text)))
        rendered = plan_context(self.specs[:len(turns)], self.texts[:len(turns)], self.config, self.counter.cut)
        if not structured:
            return [{"role": m.role, "content": m.content} for m in rendered], rendered
        return structured_messages(turns, rendered), rendered


def structured_messages(turns: Sequence[ContextTurn], rendered: Sequence[RenderedMessage]) -> list[dict[str, Any]]:
    whole = {m.turn for m in rendered if m.turn is not None and m.cut_tokens == 0}
    # a tool call survives as structured only if every result it got is there whole, and v.v.
    answered: dict[str, int] = {}
    for i in whole:
        if turns[i].role == "tool" and turns[i].tool_call_id:
            answered[turns[i].tool_call_id] = i
    call_owner: dict[str, int] = {}
    structured_assistant: set[int] = set()
    for i in whole:
        turn = turns[i]
        if turn.role == "assistant" and turn.tool_calls:
            ids = [c.get("id", "") for c in turn.tool_calls]
            if all(cid in answered for cid in ids):
                structured_assistant.add(i)
                call_owner.update(dict.fromkeys(ids, i))
    messages: list[dict[str, Any]] = []
    for m in rendered:
        turn = turns[m.turn] if m.turn is not None else None
        if turn is not None and m.turn in structured_assistant:
            messages.append({"role": "assistant", "content": turn.content, "tool_calls": turn.tool_calls})
        elif turn is not None and turn.role == "tool" and m.turn in whole and turn.tool_call_id in call_owner:
            messages.append({"role": "tool", "tool_call_id": turn.tool_call_id, "content": turn.content})
        elif m.role == "tool":
            messages.append({"role": "user", "content": f"[tool output]\n{m.content}"})
        else:
            messages.append({"role": m.role, "content": m.content})
    return messages
