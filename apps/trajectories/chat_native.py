"""Chat formats that render their own requests instead of a Jinja template. Pure: no Django.

Mistral (mistral-common). A folder with ``tekken.json`` or ``tokenizer.model.v*`` is a Mistral
tokenizer: ``encode_chat_completion`` of a finetuning request is the authority, as in Mistral's
own fine-tuning code: a window is one request, and the loss covers the tokens mistral-common
writes for each loss turn's assistant message (text, [TOOL_CALLS]..., </s>). Its validator is
strict, so a window is adapted, visibly: a tool result whose call is not in the window (the call
was truncated away) becomes a user message "[tool result]\\n...", trailing non-assistant messages
(no loss) are left out, tool call ids become the 9-character ids Mistral's format requires, and
two consecutive assistant turns (mistral-common would merge them) are refused.

gpt-oss (openai-harmony). A folder whose config.json says ``gpt_oss`` renders conversations with
openai-harmony's encoding: reasoning is the analysis channel, text the final channel, a tool call
a commentary message to ``functions.NAME``, a result a message from that tool. The loss of a turn is
everything after its ``<|start|>assistant`` (channel headers included: the model writes them).
Harmony drops the analysis of turns before a final answer and ends the last answer with
``<|return|>``: a window where that would change a loss turn's text is refused. The encoding needs
its vocabulary file (o200k_base.tiktoken), which openai-harmony downloads on first use; on a
machine without network access put it in a folder named by TIKTOKEN_ENCODINGS_BASE, or the
renderer refuses with that instruction.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apps.trajectories.splitting import IGNORE_INDEX
from apps.trajectories.tokens import turn_text
from apps.trajectories.windows import ChatRenderer, HFChatRenderer, TemplateError, TurnRow, WindowMessage

ORPHAN_RESULT = "[tool result]\n"  # how Mistral windows show a tool result whose call they left out


def native_renderer(folder: Path) -> ChatRenderer | None:
    """The renderer for a Mistral or gpt-oss model folder; None for any other folder."""
    if not folder.is_dir():
        return None
    if (folder / "tekken.json").is_file() or any(folder.glob("tokenizer.model.v*")):
        return MistralRenderer(folder)
    if is_gpt_oss(folder):
        return HarmonyRenderer(folder.name)
    return None


def is_gpt_oss(folder: Path) -> bool:
    config = folder / "config.json"
    try:
        return config.is_file() and json.loads(config.read_text()).get("model_type") == "gpt_oss"
    except ValueError:
        return False


def _arguments(call: dict[str, Any]) -> str:
    arguments = call.get("arguments")
    return arguments if isinstance(arguments, str) else json.dumps(arguments if arguments is not None else {},
                                                                   ensure_ascii=False)


# ------------------------------------------------------------------------------- Mistral


class MistralRenderer:
    """Windows as mistral-common finetuning requests."""

    _ENCODERS = ("encode_system_message", "encode_user_message", "encode_assistant_message", "encode_tool_message")
    renders_reasoning = False  # no reasoning syntax here: reasoning is text before the answer

    def __init__(self, folder: Path) -> None:
        # lazy: only Mistral / gpt-oss model folders need these
        from mistral_common.protocol.instruct.validator import ValidationMode
        from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

        files = [folder / "tekken.json"] if (folder / "tekken.json").is_file() else sorted(folder.glob("tokenizer.model.v*"))
        self.tokenizer = MistralTokenizer.from_file(str(files[-1]), mode=ValidationMode.finetuning)
        self.name = f"mistral-common ({files[-1].name})"
        self._lock = threading.Lock()  # the encoders are wrapped while one request is encoded

    @staticmethod
    def _call_id(raw: str) -> str:
        # Mistral's format takes 9 alphanumeric characters; the same id always maps the same way
        return hashlib.sha256(raw.encode()).hexdigest()[:9]

    def _messages(self, messages: Sequence[WindowMessage]) -> tuple[list[Any], list[int]]:
        """mistral-common messages, and for each the index of the window message it came from."""
        # lazy: only Mistral / gpt-oss model folders need these
        from mistral_common.protocol.instruct.messages import (
            AssistantMessage,
            SystemMessage,
            ToolMessage,
            UserMessage,
        )
        from mistral_common.protocol.instruct.tool_calls import FunctionCall, ToolCall

        last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
        out: list[Any] = []
        origin: list[int] = []
        open_calls: set[str] = set()
        for i, m in enumerate(messages[: last + 1]):
            text = turn_text(m.content, m.reasoning)
            if m.role == "assistant":
                if out and isinstance(out[-1], AssistantMessage):
                    raise TemplateError(f"{self.name}: turns {messages[origin[-1]].turn} and {m.turn} are consecutive "
                                        "assistant turns, which mistral-common merges into one message")
                calls = [ToolCall(id=self._call_id(c.get("id") or f"{m.turn}-{n}"),
                                  function=FunctionCall(name=c.get("name") or "", arguments=_arguments(c)))
                         for n, c in enumerate(m.tool_calls)]
                open_calls = {c.id for c in calls}
                out.append(AssistantMessage(content=text or None, tool_calls=calls or None))
            elif m.role == "tool" and m.tool_call_id and self._call_id(m.tool_call_id) in open_calls:
                out.append(ToolMessage(content=text, tool_call_id=self._call_id(m.tool_call_id)))
            elif m.role == "tool":
                out.append(UserMessage(content=ORPHAN_RESULT + text))
            elif m.role == "system":
                out.append(SystemMessage(content=text))
            else:
                out.append(UserMessage(content=text))
            origin.append(i)
        return out, origin

    def _tools(self, tools: Sequence[dict[str, Any]]) -> list[Any] | None:
        # lazy: only Mistral / gpt-oss model folders need these
        from mistral_common.protocol.instruct.tool_calls import Function, Tool

        return [Tool(function=Function(name=t["function"]["name"], description=t["function"].get("description", ""),
                                       parameters=t["function"].get("parameters", {}))) for t in tools] or None

    def _encode(self, messages: list[Any], tools: Sequence[dict[str, Any]]) -> tuple[list[int], list[tuple[str, int]]]:
        """The request's tokens and, in order, each message encoder's (name, token count)."""
        # lazy: only Mistral / gpt-oss model folders need these
        from mistral_common.protocol.instruct.request import ChatCompletionRequest

        instruct = self.tokenizer.instruct_tokenizer
        recorded: list[tuple[str, int]] = []

        def recording(name: str):
            original = getattr(instruct, name)

            def encoder(*args, **kwargs):
                result = original(*args, **kwargs)
                tokens = result[0] if isinstance(result, tuple) else result
                recorded.append((name, len(tokens or [])))
                return result

            return encoder

        with self._lock:
            for name in self._ENCODERS:
                setattr(instruct, name, recording(name))
            try:
                tokens = self.tokenizer.encode_chat_completion(
                    ChatCompletionRequest(messages=messages, tools=self._tools(tools))).tokens
            except Exception as exc:  # noqa: BLE001 - mistral-common's validation errors
                raise TemplateError(f"{self.name} refuses this window: {type(exc).__name__}: {exc}") from exc
            finally:
                for name in self._ENCODERS:
                    instruct.__dict__.pop(name, None)
        if sum(n for _, n in recorded) > len(tokens):
            raise TemplateError(f"{self.name}: its message encoders do not add up to the request's tokens")
        return list(tokens), recorded

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.instruct_tokenizer.tokenizer.encode(text, bos=False, eos=False))

    def decode(self, ids: Sequence[int]) -> str:
        # lazy: only Mistral / gpt-oss model folders need these
        from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy

        return self.tokenizer.instruct_tokenizer.tokenizer.decode(list(ids), special_token_policy=SpecialTokenPolicy.KEEP)

    def framing(self, role: str) -> int:
        return 3  # [INST] ... [/INST], [TOOL_RESULTS] ... [/TOOL_RESULTS], the assistant's </s>

    def render(self, messages: Sequence[WindowMessage], tools: Sequence[dict[str, Any]]) -> tuple[list[int], list[int]]:
        converted, origin = self._messages(messages)
        tokens, recorded = self._encode(converted, tools)
        assistants = [origin[i] for i, m in enumerate(converted) if type(m).__name__ == "AssistantMessage"]
        spans = [n for name, n in recorded if name == "encode_assistant_message"]
        if len(spans) != len(assistants):
            raise TemplateError(f"{self.name}: {len(spans)} assistant messages encoded for {len(assistants)} turns")
        labels = [IGNORE_INDEX] * len(tokens)
        position = len(tokens) - sum(n for _, n in recorded)  # what start() wrote (BOS)
        assistant = 0
        for name, n in recorded:
            if name == "encode_assistant_message":
                if messages[assistants[assistant]].loss:
                    labels[position:position + n] = tokens[position:position + n]
                assistant += 1
            position += n
        return tokens, labels

    def turn_counts(self, rows: Sequence[TurnRow], tools: Sequence[dict[str, Any]]) -> list[int]:
        messages = [WindowMessage(r.role, r.text, i, reasoning=r.reasoning, tool_calls=r.tool_calls,
                                  tool_call_id=r.tool_call_id) for i, r in enumerate(rows)]
        converted, origin = self._messages(messages)
        tokens, recorded = self._encode(converted, ())
        counts = [len(self.encode(r.flat_text)) + self.framing(r.role) for r in rows]  # the trailing turns
        if len(recorded) == len(converted):
            for (_name, n), i in zip(recorded, origin, strict=True):
                counts[i] = n
        # a tool result whose call a window left out is sent as a user message with a label
        orphan = len(self.encode(ORPHAN_RESULT)) + self.framing("user")
        counts = [n + orphan if r.role == "tool" else n for n, r in zip(counts, rows, strict=True)]
        with_tools, _ = self._encode(converted, tools)
        # BOS and the tools section go before the window's last user message: charged to the prefix
        counts[0] += len(tokens) - sum(n for _, n in recorded) + len(with_tools) - len(tokens)
        return counts


# ------------------------------------------------------------------------------- gpt-oss


class HarmonyRenderer:
    """Windows as openai-harmony conversations (gpt-oss)."""

    # the analysis channel: kept for turns that call tools, dropped before a final answer
    renders_reasoning = True

    def __init__(self, name: str = "gpt-oss") -> None:
        # lazy: only Mistral / gpt-oss model folders need these
        from openai_harmony import HarmonyEncodingName, HarmonyError, load_harmony_encoding

        try:
            self.encoding = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
        except HarmonyError as exc:
            raise TemplateError(
                "gpt-oss's harmony format needs openai-harmony's vocabulary file o200k_base.tiktoken, which could not "
                f"be loaded ({exc}); on a machine without network access put it in a folder and set "
                "TIKTOKEN_ENCODINGS_BASE to that folder") from exc
        self.name = f"harmony ({name})"

    @staticmethod
    def messages(m: WindowMessage, call_names: dict[str, str]) -> list[Any]:
        """The harmony messages of one window message (an assistant turn can be several);
        ``call_names`` maps the window's tool call ids to their function names."""
        # lazy: only Mistral / gpt-oss model folders need these
        from openai_harmony import Author, Message, Role

        if m.role in ("system", "user"):
            # the run's system prompt is the developer's instructions in harmony
            role = Role.DEVELOPER if m.role == "system" else Role.USER
            return [Message.from_role_and_content(role, m.content)]
        if m.role == "tool":
            name = call_names.get(m.tool_call_id, "tool")
            return [Message.from_author_and_content(Author.new(Role.TOOL, f"functions.{name}"), m.content)
                    .with_channel("commentary").with_recipient("assistant")]
        out = []
        if m.reasoning:
            out.append(Message.from_role_and_content(Role.ASSISTANT, m.reasoning).with_channel("analysis"))
        if m.content:
            channel = "commentary" if m.tool_calls else "final"
            out.append(Message.from_role_and_content(Role.ASSISTANT, m.content).with_channel(channel))
        for call in m.tool_calls:
            out.append(Message.from_role_and_content(Role.ASSISTANT, _arguments(call)).with_channel("commentary")
                       .with_recipient(f"functions.{call.get('name') or ''}").with_content_type("<|constrain|>json"))
        return out

    def _conversation(self, messages: Sequence[WindowMessage], tools: Sequence[dict[str, Any]]) -> list[list[Any]]:
        # lazy: only Mistral / gpt-oss model folders need these
        from openai_harmony import DeveloperContent, Message, Role, SystemContent, ToolDescription

        system = Message.from_role_and_content(Role.SYSTEM, SystemContent.new())
        groups: list[list[Any]] = [[system]]
        call_names: dict[str, str] = {}
        for m in messages:
            call_names.update({c.get("id") or "": c.get("name") or "" for c in m.tool_calls})
            if m.role == "system":
                developer = DeveloperContent.new().with_instructions(m.content)
                if tools:
                    developer = developer.with_function_tools([
                        ToolDescription.new(t["function"]["name"], t["function"].get("description", ""),
                                            parameters=t["function"].get("parameters")) for t in tools])
                groups.append([Message.from_role_and_content(Role.DEVELOPER, developer)])
            else:
                groups.append(self.messages(m, call_names))
        return groups

    def _tokens(self, groups: list[list[Any]], *, completion: bool = False) -> list[int]:
        # lazy: only Mistral / gpt-oss model folders need these
        from openai_harmony import Conversation, Role

        conversation = Conversation.from_messages([msg for group in groups for msg in group])
        if completion:
            return list(self.encoding.render_conversation_for_completion(conversation, Role.ASSISTANT))
        return list(self.encoding.render_conversation_for_training(conversation))

    def encode(self, text: str) -> list[int]:
        return list(self.encoding.encode(text, allowed_special=set()))

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode(list(ids))

    def framing(self, role: str) -> int:
        return 6  # <|start|>role<|channel|>final<|message|> ... <|end|>

    def render(self, messages: Sequence[WindowMessage], tools: Sequence[dict[str, Any]]) -> tuple[list[int], list[int]]:
        groups = self._conversation(messages, tools)
        whole = self._tokens(groups)
        labels = [IGNORE_INDEX] * len(whole)
        for k, m in enumerate(messages):
            if not m.loss:
                continue
            prompt = self._tokens(groups[: k + 1], completion=True)
            turn = self._tokens(groups[: k + 2])
            # the last token of a final answer is <|return|> when it ends the conversation, <|end|> after it
            if whole[: len(prompt)] != prompt or whole[: len(turn) - 1] != turn[:-1]:
                raise TemplateError(f"{self.name}, turn {m.turn}: harmony renders this turn differently once later "
                                    "turns follow it (it drops the analysis of turns before a final answer)")
            labels[len(prompt):len(turn)] = whole[len(prompt):len(turn)]
        return whole, labels

    def turn_counts(self, rows: Sequence[TurnRow], tools: Sequence[dict[str, Any]]) -> list[int]:
        messages = [WindowMessage(r.role, r.text, i, reasoning=r.reasoning, tool_calls=r.tool_calls,
                                  tool_call_id=r.tool_call_id) for i, r in enumerate(rows)]
        groups = self._conversation(messages, tools)
        counts = [sum(len(self.encoding.render(msg)) for msg in group) for group in groups[1:]]
        counts[0] += len(self.encoding.render(groups[0][0]))  # the system message: the prefix's
        return counts


def renderer_for(tokenizer, folder: str | Path | None = None) -> ChatRenderer:
    """The renderer for a model: mistral-common for a Mistral tokenizer folder, openai-harmony for
    gpt-oss, else the tokenizer's own chat template."""
    path = Path(folder) if folder else Path(str(getattr(tokenizer, "name_or_path", "") or ""))
    native = native_renderer(path)
    return native if native is not None else HFChatRenderer(tokenizer)
