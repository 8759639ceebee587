"""Training windows in the base model's own chat format: what SFT, RL, the dataset export and the
window inspector all train on or show. Pure: no Django, no torch.

A window's messages (``splitting.render_window``: prefix, omitted-turns marker, history with cut
turns, targets) are rendered **once, as one conversation**, with the tools the trajectory
declares, and tokenised. Rendering each message alone (what this module did before) gives a text
the model never sees: a Qwen2.5 template adds its default system prompt to every message, Llama
3.x a date header, others a BOS or the tools section.

Loss spans. Labels are -100 everywhere except on the window's loss turns: the assistant's own
output and its end-of-turn token, never the role header.
- A template with ``{% generation %}`` blocks gives the spans itself (the assistant mask).
- Otherwise (real Qwen2.5, Llama 3.x, DeepSeek-V3 and GLM-4 templates have none) the span of loss
  turn k comes from an incremental render: P = render(messages[:k], add_generation_prompt=True)
  must be a prefix of F = render(messages[:k+1]), and F a prefix of the whole window W; the span
  is F minus P, cut after its last stop token (eos, generation_config's eos ids). A template
  whose turn ends with the next turn's role token (GLM-4: ``<|user|>``, ``<|observation|>``)
  gets that token, and a window ending on a loss turn gets it appended, as GLM's own
  fine-tuning code does.
- A template that is not prefix-stable there (it rewrites earlier turns once later ones exist:
  Qwen3 and DeepSeek-R1 drop the reasoning of turns before the last user message, gpt-oss's
  Jinja template the analysis channel) is refused with ``TemplateError`` naming the template,
  the turn and the first difference: we never train on a text the model would not see. One
  rewrite is not a refusal: a turn without reasoning that the template shows with an empty
  reasoning block only while it ends the conversation (Qwen3's ``<think>\n\n</think>\n\n``) is
  trained as every later turn sees it, without the block; as a window's last turn the block is in
  its context, never in its loss.

Message shapes. How a template wants tool calls and results is probed once per template (arguments
as an object or a JSON string, ``tool`` or GLM's ``observation`` role, calls as ``tool_calls`` or
GLM's ``metadata``); a template with no tool-call syntax gets the call as JSON in the content.
Reasoning goes to ``reasoning_content`` when the template reads it, else before the text. Whether
a window has reasoning at all is the caller's choice (``without_reasoning``: SFT's
``train_on_reasoning``); ``renders_reasoning`` says whether the format shows the reasoning of the
turns a window trains (Qwen3 and gpt-oss do, formats without a reasoning syntax do not).

Planning. The planner needs each turn's tokens in context: the difference a turn makes when added
after its predecessor, or after the omitted-turns marker (the two contexts a turn can have in a
window), the larger of the two. The conversation's fixed overhead (BOS, default system prompt,
tools section, date header) lands in turn 0, so it is charged to the pinned prefix. Every rendered
window is checked against l_max; none is ever cut silently.

Mistral tokenizers (mistral-common) and gpt-oss (openai-harmony) render their own requests:
``chat_native.py``, whose ``renderer_for`` picks the renderer for a model folder.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from apps.core.domain import Invalid
from apps.trajectories.splitting import (
    CUT_MARKER,
    IGNORE_INDEX,
    OMITTED_MARKER,
    SplitConfig,
    SplitManifest,
    TurnSpec,
    mentions_paper,
    plan_split,
    render_window,
)
from apps.trajectories.tokens import turn_text

MARKER_ROLE = "user"  # the omitted-turns marker is a message of its own, in the user's voice
# The cut marker, and shorter forms for marker budgets too small for it
CUT_MARKERS = (CUT_MARKER, "[{n} cut]", "[…]", "")


class TemplateError(Invalid, ValueError):
    """The model's chat format cannot render this window faithfully (refused, never trained on)."""


@dataclass(frozen=True)
class TurnRow:
    """One turn as the model sees it. ``tool_calls`` are ``{"id", "name", "arguments"}``."""

    role: str
    text: str
    no_loss: bool = False
    reasoning: str = ""
    tool_calls: tuple[dict[str, Any], ...] = ()
    tool_call_id: str = ""
    # Token-in/token-out (RL): the ids the sampler generated for this assistant turn, end-of-turn
    # token included when it was sampled, and the sampler's log-prob of each. A window that trains
    # on this turn uses exactly these ids, never a re-render of the text (which re-tokenises the
    # sampled text, and turns a tool call the server parsed into a template's JSON with its own id).
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()

    @property
    def flat_text(self) -> str:
        """Reasoning, text and tool calls as one text: what a cut turn keeps a head and tail of."""
        return turn_text(self.text, self.reasoning, self.tool_calls)


@dataclass(frozen=True)
class WindowMessage:
    """One message of a rendered window; ``turn`` is None for the omitted-turns marker."""

    role: str
    content: str
    turn: int | None = None
    loss: bool = False
    reasoning: str = ""
    tool_calls: tuple[dict[str, Any], ...] = ()
    tool_call_id: str = ""
    part: str = "target"
    cut_tokens: int = 0


@dataclass(frozen=True)
class Example:
    window: int
    input_ids: list[int]
    labels: list[int]
    # The sampler's log-prob of each input id (RL, token-in/token-out): set on the sampled tokens of
    # target turns, None elsewhere; None as a whole when no target turn carries sampled ids.
    sampler_logprobs: list[float | None] | None = None

    @property
    def loss_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass(frozen=True)
class RenderedWindow:
    """A window as trained: its messages, token ids and labels (IGNORE_INDEX = no loss)."""

    number: int
    messages: list[WindowMessage]
    input_ids: list[int]
    labels: list[int]

    def example(self) -> Example:
        return Example(self.number, self.input_ids, self.labels)


class ChatRenderer(Protocol):
    """A model's chat format: renders windows and measures turns in the same tokens."""

    name: str
    # The format shows an assistant turn's reasoning in its own syntax on the turns of an agent run
    # (after the task, followed by tool results): what ``train_on_reasoning`` defaults to.
    renders_reasoning: bool

    def turn_counts(self, rows: Sequence[TurnRow], tools: Sequence[dict[str, Any]]) -> list[int]:
        """Tokens of each turn in context; turn 0 carries the conversation's fixed overhead."""

    def framing(self, role: str) -> int:
        """Tokens a message of ``role`` costs besides its text."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def render(self, messages: Sequence[WindowMessage], tools: Sequence[dict[str, Any]]) -> tuple[list[int], list[int]]:
        """input_ids and labels of one window (labels IGNORE_INDEX outside the loss spans)."""


# ------------------------------------------------------------------------------- tools


def normalise_tools(raw: Any) -> list[dict[str, Any]]:
    """Declared tools as chat templates take them: ``{"type": "function", "function": {...}}``.

    Importers keep what the source declared (OpenAI tools, ATIF tool definitions, OpenHands
    tool lists); anything without a name is not a tool and is left out.
    """
    tools: list[dict[str, Any]] = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict):
            continue
        function = item.get("function") if isinstance(item.get("function"), dict) else item
        name = function.get("name")
        if not isinstance(name, str) or not name:
            continue
        spec: dict[str, Any] = {"name": name}
        if isinstance(function.get("description"), str):
            spec["description"] = function["description"]
        parameters = function.get("parameters", function.get("input_schema"))
        if isinstance(parameters, dict):
            spec["parameters"] = parameters
        tools.append({"type": "function", "function": spec})
    return tools


# ------------------------------------------------------------------------------- HF templates


@dataclass(frozen=True)
class _Dialect:
    """How one chat template wants tool calls, tool results and reasoning."""

    arguments: str = "object"  # "object" or "string" (DeepSeek concatenates a JSON string)
    tool_role: str = "tool"  # GLM-4: "observation"
    calls: str = "tool_calls"  # "tool_calls", "metadata" (GLM-4) or "text" (no tool syntax: JSON in content)
    reasoning: bool = False  # the template reads reasoning_content


_DIALECTS = (
    _Dialect(),
    _Dialect(arguments="string"),
    _Dialect(tool_role="observation", calls="metadata"),
    _Dialect(calls="text"),
    _Dialect(tool_role="observation", calls="text"),
)
_GENERATION_RE = re.compile(r"\{%-?\s*generation\s*-?%\}")
_PROBE_CALL = {"id": "call_probe0", "name": "probe_function", "arguments": {"probe_argument": 7}}
_PROBE_TOOL = {"type": "function", "function": {"name": "probe_tool", "description": "probe tool description",
                                                 "parameters": {"type": "object", "properties": {}}}}


def _first_difference(expected: str, actual: str) -> str:
    """Where two renders part, with a little context: what a refusal shows."""
    n = 0
    limit = min(len(expected), len(actual))
    while n < limit and expected[n] == actual[n]:
        n += 1
    return f"at character {n}: {expected[n:n + 60]!r} became {actual[n:n + 60]!r}"


def _stop_tokens(tokenizer) -> list[str]:
    """The tokens generation stops at: eos, plus generation_config.json's eos ids when the folder has one."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    config = Path(str(getattr(tokenizer, "name_or_path", "") or "")) / "generation_config.json"
    if config.is_file():
        try:
            eos = json.loads(config.read_text()).get("eos_token_id")
        except ValueError:
            eos = None
        ids.update(int(i) for i in (eos if isinstance(eos, list) else [eos]) if isinstance(i, int))
    tokens = [tokenizer.convert_ids_to_tokens(i) for i in sorted(ids)]
    return [t for t in tokens if isinstance(t, str) and t]


class HFChatRenderer:
    """A Hugging Face tokenizer's Jinja chat template (``tokenizer.chat_template``)."""

    def __init__(self, tokenizer, name: str | None = None) -> None:
        template = getattr(tokenizer, "chat_template", None)
        if not isinstance(template, str) or not template:
            raise TemplateError(f"The tokenizer {tokenizer.name_or_path!r} has no chat template to render turns with.")
        if not getattr(tokenizer, "is_fast", False):
            raise TemplateError(f"The tokenizer {tokenizer.name_or_path!r} is not a fast tokenizer: its token offsets, "
                                "which the loss spans need, are not available.")
        self.tokenizer = tokenizer
        self.template = template
        self.name = name or Path(str(tokenizer.name_or_path or "")).name or "chat template"
        self.has_generation = bool(_GENERATION_RE.search(template))
        self.stop_tokens = _stop_tokens(tokenizer)
        self.dialect = self._probe_dialect()
        self._framing: dict[str, int] = {}

    # -- messages -------------------------------------------------------------------------

    def chat_messages(self, messages: Sequence[WindowMessage]) -> list[dict[str, Any]]:
        """The window's messages as this template takes them (what ``apply_chat_template`` gets)."""
        return [self._message(m) for m in messages]

    def _message(self, m: WindowMessage, dialect: _Dialect | None = None) -> dict[str, Any]:
        dialect = dialect or self.dialect
        reasoning = m.reasoning if dialect.reasoning else ""
        text = m.content if dialect.reasoning else turn_text(m.content, m.reasoning)
        if m.role == "tool":
            message: dict[str, Any] = {"role": dialect.tool_role, "content": text}
            if m.tool_call_id:
                message["tool_call_id"] = m.tool_call_id
            return message
        if m.role != "assistant" or not m.tool_calls:
            message = {"role": m.role, "content": text}
        elif dialect.calls == "text":
            message = {"role": "assistant", "content": turn_text(text, "", m.tool_calls)}
        elif dialect.calls == "metadata":
            # GLM-4: a call is an assistant message whose metadata is the function name and whose
            # content is the arguments; there is no way to say text and a call in one turn.
            if len(m.tool_calls) > 1 or text:
                raise TemplateError(f"{self.name}: turn {m.turn} has {'text and ' if text else ''}"
                                    f"{len(m.tool_calls)} tool call(s); this template's format has one call per "
                                    "assistant turn and no text beside it.")
            call = m.tool_calls[0]
            arguments = call.get("arguments")
            message = {"role": "assistant", "metadata": call.get("name") or "",
                       "content": arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)}
        else:
            message = {"role": "assistant", "content": text, "tool_calls": [
                self._call(call, i, dialect) for i, call in enumerate(m.tool_calls)]}
        if reasoning:
            message["reasoning_content"] = reasoning
        return message

    @staticmethod
    def _call(call: dict[str, Any], position: int, dialect: _Dialect) -> dict[str, Any]:
        arguments = call.get("arguments")
        if arguments is None:
            arguments = {}
        if dialect.arguments == "string" and not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        return {"id": call.get("id") or f"call_{position}", "type": "function",
                "function": {"name": call.get("name") or "", "arguments": arguments}}

    def _render(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]],
                generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(list(messages), tools=list(tools) or None, tokenize=False,
                                                  add_generation_prompt=generation_prompt)

    def _probe_dialect(self) -> _Dialect:
        """The first message shape under which the template shows a tool call and its result."""
        probe = [
            WindowMessage("system", "probe system"), WindowMessage("user", "probe question"),
            WindowMessage("assistant", "", tool_calls=(_PROBE_CALL,)),
            WindowMessage("tool", "probe result", tool_call_id="call_probe0"),
            WindowMessage("assistant", "probe answer"),
        ]
        reads_reasoning = "reasoning_content" in self.template or "thinking" in self.template
        fallback = _Dialect(calls="text", reasoning=reads_reasoning)
        for dialect in _DIALECTS:
            dialect = replace(dialect, reasoning=reads_reasoning)
            try:
                text = self._render([self._message(m, dialect) for m in probe], [_PROBE_TOOL])
            except Exception:  # noqa: BLE001 - a template raises whatever it likes on a shape it refuses
                continue
            call_shown = "probe_function" in text and '"probe_argument"' in text
            if call_shown and "probe result" in text and "probe answer" in text:
                return dialect
        return fallback

    @cached_property
    def renders_reasoning(self) -> bool:
        """Whether the template shows, in its own syntax, the reasoning of an assistant turn that a
        tool result and another answer follow (the trained turns of an agent run)."""
        if not self.dialect.reasoning:
            return False  # no reasoning syntax: reasoning would only be text before the answer
        probe = [
            WindowMessage("system", "probe system"), WindowMessage("user", "probe question"),
            WindowMessage("assistant", "", reasoning="probe reasoning", tool_calls=(_PROBE_CALL,)),
            WindowMessage("tool", "probe result", tool_call_id="call_probe0"),
            WindowMessage("assistant", "probe answer", reasoning="last reasoning"),
        ]
        try:
            return "probe reasoning" in self._render(self.chat_messages(probe), [_PROBE_TOOL])
        except Exception:  # noqa: BLE001 - a template raises whatever it likes on a shape it refuses
            return False

    @cached_property
    def _empty_reasoning(self) -> str:
        """What the template writes before the text of a final turn without reasoning and not once a
        tool result follows that turn: Qwen3's empty ``<think>`` block; '' for most templates."""
        question = [self._message(WindowMessage("user", "probe question"))]
        answer = self._message(WindowMessage("assistant", "probe answer"))
        result = self._message(WindowMessage("tool", "probe result"))
        try:
            prompt = self._render(question, (), generation_prompt=True)
            last = self._render([*question, answer], ())
            followed = self._render([*question, answer, result], ())
        except Exception:  # noqa: BLE001
            return ""
        if not (last.startswith(prompt) and followed.startswith(prompt)):
            return ""
        block, found, rest = last[len(prompt):].partition("probe answer")
        return block if found and block.strip() and followed[len(prompt):].startswith("probe answer" + rest) else ""

    # -- measuring ------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def _tokens(self, text: str) -> int:
        return len(self.encode(text)) if text else 0

    def _token_counts(self, texts: list[str]) -> list[int]:
        """Token counts of many texts in one batch (the tokenizer's own threads)."""
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    @staticmethod
    def _suffixes(base: str, without: str, with_it: str) -> tuple[str, str]:
        """The two renders from the end of the head on (where they both start with it)."""
        start = len(base) if without.startswith(base) and with_it.startswith(base) else 0
        return without[start:], with_it[start:]

    def turn_counts(self, rows: Sequence[TurnRow], tools: Sequence[dict[str, Any]]) -> list[int]:
        messages = [self._message(_row_message(i, row)) for i, row in enumerate(rows)]
        if not messages:
            return []
        # The head (the leading non-assistant turns) is always rendered: templates that read the
        # first system or user message (Llama 3.1 puts the tools in it) see what they expect.
        n_head = next((i for i, row in enumerate(rows) if row.role == "assistant"), len(rows)) or 1
        head = messages[:n_head]
        counts: list[int] = []
        rendered = 0
        for j in range(1, n_head + 1):
            try:
                total = self._tokens(self._render(head[:j], tools))
            except Exception:  # noqa: BLE001 - a partial head some templates refuse: charged to the next turn
                counts.append(0)
                continue
            counts.append(max(0, total - rendered))
            rendered = total
        base = self._render(head, tools)
        marker = {"role": MARKER_ROLE, "content": OMITTED_MARKER.format(n=99999)}
        after_marker = self._render(head + [marker], tools)
        # each turn after its predecessor and after the marker: the two contexts it can have in a window
        pairs: list[tuple[str, str]] = []
        for i in range(n_head, len(messages)):
            previous = [messages[i - 1]] if i > n_head else []
            try:
                pairs.append(self._suffixes(base, after_marker, self._render(head + [marker, messages[i]], tools)))
                pairs.append(self._suffixes(base, self._render(head + previous, tools),
                                            self._render(head + previous + [messages[i]], tools)))
            except Exception as exc:  # noqa: BLE001 - the template's own exception, for this turn
                raise TemplateError(f"{self.name} cannot render turn {i} ({rows[i].role}): {exc}") from exc
        lengths = self._token_counts([text for pair in pairs for text in pair])
        deltas = [max(0, lengths[2 * j + 1] - lengths[2 * j]) for j in range(len(pairs))]
        counts += [max(deltas[2 * k], deltas[2 * k + 1]) for k in range(len(messages) - n_head)]
        counts[0] += self._closing_tokens()
        return counts

    def framing(self, role: str) -> int:
        if role not in self._framing:
            head = [{"role": "user", "content": "x"}]
            message = {"role": self.dialect.tool_role if role == "tool" else role, "content": "x"}
            try:
                base = self._render(head, ())
                without, with_it = self._suffixes(base, base, self._render(head + [message], ()))
                self._framing[role] = max(0, self._tokens(with_it) - self._tokens(without) - 1)
            except Exception:  # noqa: BLE001 - a template refusing the probe order: assume ChatML's cost
                self._framing[role] = 5
        return self._framing[role]

    @cached_property
    def _end_stop(self) -> str | None:
        """The stop token a turn ends with when the next turn's role token is its end (GLM-4), else None."""
        if not self.stop_tokens:
            return None
        try:
            short = self._render([self._message(WindowMessage("user", "q")),
                                  self._message(WindowMessage("assistant", "a"))], ())
            longer = self._render([self._message(WindowMessage("user", "q")), self._message(WindowMessage("assistant", "a")),
                                   self._message(WindowMessage("user", "z"))], ())
        except Exception:  # noqa: BLE001
            return None
        prompt = self._render([self._message(WindowMessage("user", "q"))], (), generation_prompt=True)
        own = short[len(prompt):] if short.startswith(prompt) else short
        if any(stop in own for stop in self.stop_tokens):
            return None  # the turn carries its own end token
        follower = longer[len(short):] if longer.startswith(short) else ""
        return next((stop for stop in self.stop_tokens if follower.startswith(stop)), None)

    def _closing_tokens(self) -> int:
        return 1 if self._end_stop is not None else 0

    # -- rendering ------------------------------------------------------------------------

    def render(self, messages: Sequence[WindowMessage], tools: Sequence[dict[str, Any]]) -> tuple[list[int], list[int]]:
        dicts = self.chat_messages(messages)
        try:
            if self.has_generation:
                ids, labels = self._render_with_mask(messages, dicts, tools)
            else:
                ids, labels = self._render_with_diffs(messages, dicts, tools)
        except TemplateError:
            raise
        except Exception as exc:  # noqa: BLE001 - the template's own exception (raise_exception, a TypeError)
            raise TemplateError(f"{self.name} cannot render this window: {type(exc).__name__}: {exc}") from exc
        return ids, labels

    def _render_with_mask(self, messages, dicts, tools) -> tuple[list[int], list[int]]:
        out = self.tokenizer.apply_chat_template(dicts, tools=list(tools) or None, tokenize=True, return_dict=True,
                                                 return_assistant_tokens_mask=True)
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
        runs: list[tuple[int, int]] = []
        for t, flag in enumerate(mask):
            if flag and (t == 0 or not mask[t - 1]):
                runs.append((t, t + 1))
            elif flag:
                runs[-1] = (runs[-1][0], t + 1)
        assistants = [m for m in messages if m.role == "assistant"]
        if len(runs) != len(assistants):
            raise TemplateError(f"{self.name}: its {{% generation %}} blocks mark {len(runs)} spans for "
                                f"{len(assistants)} assistant messages; the loss cannot be assigned to turns.")
        labels = [IGNORE_INDEX] * len(ids)
        for (start, end), message in zip(runs, assistants, strict=True):
            if message.loss:
                labels[start:end] = ids[start:end]
        return ids, labels

    def _render_with_diffs(self, messages, dicts, tools) -> tuple[list[int], list[int]]:
        whole = self._render(dicts, tools)
        spans: list[tuple[int, int]] = []
        append_stop = False
        for k, message in enumerate(messages):
            if not message.loss:
                continue
            start, end, needs_stop = self._loss_span(dicts, k, whole, tools, message)
            spans.append((start, end))
            append_stop = needs_stop
        encoded = self.tokenizer(whole, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        labels = [IGNORE_INDEX] * len(ids)
        span = 0
        for t, (char_start, char_end) in enumerate(encoded["offset_mapping"]):
            while span < len(spans) and char_start >= spans[span][1]:
                span += 1
            if span == len(spans):
                break
            # a token belongs to the turn when it starts inside the span: a token that straddles
            # the header and the content stays with the header, which carries no loss
            if spans[span][0] <= char_start < spans[span][1] and char_end > char_start:
                labels[t] = ids[t]
        if append_stop and self._end_stop is not None:
            stop_id = self.tokenizer.convert_tokens_to_ids(self._end_stop)
            ids.append(stop_id)
            labels.append(stop_id)
        return ids, labels

    def _loss_span(self, dicts, k: int, whole: str, tools, message: WindowMessage) -> tuple[int, int, bool]:
        """Character span of loss turn k in the whole render, and whether its stop token must be appended."""
        where = f"{self.name}, turn {message.turn}"
        try:
            prompt = self._render(dicts[:k], tools, generation_prompt=True)
        except Exception as exc:  # noqa: BLE001
            raise TemplateError(f"{where}: the template cannot render the conversation before this turn "
                                f"({type(exc).__name__}: {exc})") from exc
        turn = self._render(dicts[: k + 1], tools)
        if not turn.startswith(prompt):
            raise TemplateError(f"{where}: the template is not prefix-stable: the prompt for this turn is not the "
                                f"start of the conversation with it, {_first_difference(prompt, turn)}")
        # The empty reasoning block of a turn without reasoning is never trained on: the turn is
        # trained as it stands once others follow it (the text later turns see), or after the block.
        block = self._empty_reasoning
        skip = len(block) if block and not message.reasoning and turn.startswith(block, len(prompt)) else 0
        if skip and not whole.startswith(turn):
            turn, skip = prompt + turn[len(prompt) + skip:], 0
        if not whole.startswith(turn):
            raise TemplateError(f"{where}: the template rewrites this turn once later turns follow it, "
                                f"{_first_difference(turn, whole)}; training on that text would teach what the "
                                "model never sees at this point")
        start, end = len(prompt) + skip, len(turn)
        own = whole[start:end]
        last = max((own.rfind(stop) + len(stop) for stop in self.stop_tokens if stop in own), default=-1)
        if last >= 0:
            return start, start + last, False
        follower = whole[end:]
        stop = next((s for s in self.stop_tokens if follower.startswith(s)), None)
        if stop is not None:
            return start, end + len(stop), False
        return start, end, not follower.strip()


# ------------------------------------------------------------------------------- windows


def _row_message(index: int, row: TurnRow, *, loss: bool = False, part: str = "target") -> WindowMessage:
    return WindowMessage(row.role, row.text, index, loss, row.reasoning, tuple(row.tool_calls), row.tool_call_id, part)


def without_reasoning(rows: Sequence[TurnRow]) -> list[TurnRow]:
    """The turns with their reasoning left out: windows that teach the answers and tool calls alone."""
    return [replace(row, reasoning="") if row.reasoning else row for row in rows]


def plan_windows(rows: Sequence[TurnRow], config: SplitConfig, renderer: ChatRenderer,
                 tools: Sequence[dict[str, Any]] = (), counts: Sequence[int] | None = None) -> SplitManifest:
    """The split of one trajectory, planned on the renderer's own token counts (``counts``: those
    counts computed earlier, by the same renderer for the same rows and tools)."""
    counts = renderer.turn_counts(rows, tools) if counts is None else counts
    # a sampled turn is trained on its sampled ids, which may be more tokens than its re-render
    counts = [max(count, len(row.token_ids) + renderer.framing(row.role)) if row.token_ids else count
              for row, count in zip(rows, counts, strict=True)]
    specs = [TurnSpec(i, row.role, max(1, count), row.no_loss, mentions_paper(row.flat_text))
             for i, (row, count) in enumerate(zip(rows, counts, strict=True))]
    return plan_split(specs, config)


def window_messages(rows: Sequence[TurnRow], manifest: SplitManifest, number: int,
                    renderer: ChatRenderer, shrink: int = 0) -> list[WindowMessage]:
    """The messages of window ``number``: whole turns keep their structure (tool calls, reasoning);
    a cut turn is its text's head and tail around the cut marker (``shrink`` tokens shorter);
    markers are plain messages."""
    marker_limit = manifest.config.marker_tokens
    # the longest cut marker whose line fits the marker budget (a budget of a few tokens gets "[…]")
    cut_marker = next((m for m in CUT_MARKERS if len(renderer.encode(f"\n{m.format(n=10**7)}\n")) <= marker_limit),
                      CUT_MARKERS[-1])
    marker_excess = max(0, len(renderer.encode(f"\n{cut_marker.format(n=10**7)}\n")) - marker_limit)
    # head/tail are counted in turn tokens, framing included: the text gives up the largest framing
    # of any role, so a cut turn never outgrows its share, first from the head, then from the tail
    give_up = max(renderer.framing(role) for role in ("system", "user", "assistant", "tool")) + marker_excess + shrink

    def cut(text: str, head: int, tail: int) -> tuple[str, str]:
        ids = renderer.encode(text)
        keep_head = head - give_up
        keep_tail = tail + min(0, keep_head)
        keep_head, keep_tail = max(0, keep_head), max(0, keep_tail)
        return renderer.decode(ids[:keep_head]), renderer.decode(ids[len(ids) - keep_tail:] if keep_tail else [])

    texts = [row.flat_text for row in rows]
    messages: list[WindowMessage] = []
    for m in render_window(texts, manifest, number, cut, cut_marker=cut_marker, marker_role=MARKER_ROLE):
        if m.turn is None:
            budget = max(1, marker_limit - renderer.framing(MARKER_ROLE))
            messages.append(WindowMessage(m.role, renderer.decode(renderer.encode(m.content)[:budget]),
                                          part=m.part))
        elif m.cut_tokens:
            row = rows[m.turn]
            messages.append(WindowMessage(row.role, m.content, m.turn, m.loss, tool_call_id=row.tool_call_id,
                                          part=m.part, cut_tokens=m.cut_tokens))
        else:
            messages.append(_row_message(m.turn, rows[m.turn], loss=m.loss, part=m.part))
    return messages


def render_training_window(rows: Sequence[TurnRow], manifest: SplitManifest, number: int, renderer: ChatRenderer,
                           tools: Sequence[dict[str, Any]] = ()) -> RenderedWindow:
    """Window ``number`` exactly as trained: one render of its messages, and its labels.

    A cut turn's text is re-tokenised in its new context, so a window with cut turns can come out a
    few tokens over the plan: its cut turns are then shortened by the difference and it is rendered
    again (the same steps every time, so the inspector, the export and SFT get the same window).
    """
    l_max = manifest.config.l_max
    shrink = 0
    for _attempt in range(4):
        messages = window_messages(rows, manifest, number, renderer, shrink)
        input_ids, labels = renderer.render(messages, tools)
        over = len(input_ids) - l_max
        if over <= 0:
            return RenderedWindow(number, messages, input_ids, labels)
        if not any(m.cut_tokens for m in messages):
            break
        shrink += over
    raise TemplateError(f"{renderer.name}: window {number} renders to {len(input_ids)} tokens, more than "
                        f"l_max={l_max} (planned {manifest.window(number).total_tokens}); refusing to cut it")


def split_examples(rows: Sequence[TurnRow], config: SplitConfig, renderer: ChatRenderer,
                   tools: Sequence[dict[str, Any]] = ()) -> tuple[SplitManifest, list[Example]]:
    """The split manifest of one trajectory and one example per window that has loss turns."""
    manifest = plan_windows(rows, config, renderer, tools)
    examples = [with_sampled_ids(render_training_window(rows, manifest, w.number, renderer, tools), rows, renderer)
                for w in manifest.windows if w.loss_turns]
    return manifest, examples


def loss_runs(labels: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of consecutive loss tokens: one per loss turn."""
    runs: list[tuple[int, int]] = []
    for t, label in enumerate(labels):
        if label == IGNORE_INDEX:
            continue
        if runs and runs[-1][1] == t:
            runs[-1] = (runs[-1][0], t + 1)
        else:
            runs.append((t, t + 1))
    return runs


def _stop_ids(renderer: ChatRenderer) -> set[int]:
    """Token ids that end a turn in this format (the tokenizer's eos and generation_config's)."""
    tokenizer = getattr(renderer, "tokenizer", None)
    ids: set[int] = set()
    for token in getattr(renderer, "stop_tokens", ()) or ():
        token_id = tokenizer.convert_tokens_to_ids(token) if tokenizer is not None else None
        if isinstance(token_id, int):
            ids.add(token_id)
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    return ids


def with_sampled_ids(window: RenderedWindow, rows: Sequence[TurnRow], renderer: ChatRenderer) -> Example:
    """The window's example with each sampled target turn's loss span replaced by the ids the
    sampler generated (token-in/token-out), and the sampler's log-probs aligned to input_ids.

    The render gives the context (headers, history, other turns) and where each loss span sits;
    a target turn with ``token_ids`` is then exactly those ids, labelled as the targets. When the
    sampled turn did not end with an end-of-turn token (cut at max_tokens or the timeout) but the
    render's span does, that token stays as context without loss: the sampler never chose it; so
    does whatever the template's span has after its end-of-turn token.
    """
    targets = [m for m in window.messages if m.loss]
    if not any(m.turn is not None and rows[m.turn].token_ids for m in targets):
        return window.example()
    runs = loss_runs(window.labels)
    if len(runs) != len(targets):
        raise TemplateError(f"{renderer.name}: window {window.number} has {len(runs)} loss spans for "
                            f"{len(targets)} target turns; the sampled token ids cannot be placed")
    stops = _stop_ids(renderer)
    ids: list[int] = []
    labels: list[int] = []
    logprobs: list[float | None] = []
    at = 0
    for (start, end), message in zip(runs, targets, strict=True):
        ids += window.input_ids[at:start]
        labels += [IGNORE_INDEX] * (start - at)
        logprobs += [None] * (start - at)
        row = rows[message.turn] if message.turn is not None else None
        if row is None or not row.token_ids or message.cut_tokens:
            ids += window.input_ids[start:end]
            labels += window.labels[start:end]
            logprobs += [None] * (end - start)
        else:
            sampled = list(row.token_ids)
            known = list(row.logprobs) if len(row.logprobs) == len(sampled) else [None] * len(sampled)
            span = window.input_ids[start:end]
            # the rendered turn up to its end-of-turn token is replaced; what a template's loss span
            # has after it (ChatML's newline inside {% generation %}) was never sampled: context
            stop_at = max((k for k, token in enumerate(span) if token in stops), default=None)
            body_end = end if stop_at is None else start + stop_at + 1
            closing = [span[stop_at]] if stop_at is not None and sampled[-1] not in stops else []
            after = closing + window.input_ids[body_end:end]
            ids += sampled + after
            labels += sampled + [IGNORE_INDEX] * len(after)
            logprobs += known + [None] * len(after)
        at = end
    ids += window.input_ids[at:]
    labels += window.labels[at:]
    logprobs += [None] * (len(window.input_ids) - at)
    return Example(window.number, ids, labels, logprobs)


def dataset_hash(manifest_hashes: Sequence[str], tokenizer_name: str) -> str:
    """One hash for a training set: which split manifests, tokenised by which tokenizer."""
    payload = json.dumps({"manifests": list(manifest_hashes), "tokenizer": tokenizer_name}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()
