"""Windows in real families' chat formats: how many are exactly the whole-conversation render.

For each family (tiny tokenizers with the family's template and special tokens, built offline:
tests/support/chat_families.py), a 60-step agent run with declared tools is split; each training
window's input_ids are compared with the family's own render of the window's messages as one
conversation (``apply_chat_template`` with the tools; mistral-common's ``encode_chat_completion``;
openai-harmony's ``render_conversation_for_training``). GLM-4 windows that end on a trained turn
carry GLM's chat stop token after the render (as GLM's fine-tuning does): it is not counted as a
difference. The baseline, in the same run, is the naive way this project used before: each
message rendered alone with the template and the pieces concatenated.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.trajectories.chat_native import HarmonyRenderer, MistralRenderer  # noqa: E402
from apps.trajectories.splitting import SplitConfig  # noqa: E402
from apps.trajectories.windows import (
    HFChatRenderer,
    TemplateError,
    TurnRow,
    normalise_tools,
    plan_windows,
    render_training_window,
)
from tests.support.chat_families import BASH_TOOL, build_family_tokenizer, build_mistral_tekken  # noqa: E402

TOOLS = normalise_tools(BASH_TOOL)
CONFIG = SplitConfig(l_max=1200, prefix_end=1, overlap_turns=2, history_budget=0.25)


def agent_run(steps: int = 60, *, text: bool = True) -> list[TurnRow]:
    rows = [TurnRow("system", "You are a research agent."), TurnRow("user", "Reproduce the paper at /home/paper.")]
    for i in range(steps):
        call = {"id": f"call{i}", "name": "bash", "arguments": {"cmd": f"python train.py --seed {i}"}}
        rows.append(TurnRow("assistant", f"Step {i}." if text and i % 3 == 0 else "", tool_calls=(call,)))
        rows.append(TurnRow("tool", f"epoch {i} loss 0.{i} accuracy 0.9{i % 10}\n" * (2 + i % 5),
                            tool_call_id=f"call{i}"))
    rows.append(TurnRow("assistant", "Done: the results match Table 2."))
    return rows


def hf_reference(tokenizer, renderer, window) -> list[int]:
    return list(tokenizer.apply_chat_template(renderer.chat_messages(window.messages), tools=TOOLS, tokenize=True,
                                              return_dict=True)["input_ids"])


def hf_naive(tokenizer, renderer, window) -> list[int]:
    """Before: every message rendered alone (role and text), the pieces concatenated."""
    ids: list[int] = []
    for m in window.messages:
        text = tokenizer.apply_chat_template([{"role": m.role, "content": m.content}], tokenize=False)
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def mistral_reference(renderer, window) -> list[int]:
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    messages, _origin = renderer._messages(window.messages)
    return list(renderer.tokenizer.encode_chat_completion(
        ChatCompletionRequest(messages=messages, tools=renderer._tools(TOOLS))).tokens)


def mistral_naive(renderer, window) -> list[int]:
    """Before: each message alone; mistral-common refuses a request that is not a conversation."""
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    messages, _origin = renderer._messages(window.messages)
    ids: list[int] = []
    for message in messages:
        try:
            ids += renderer.tokenizer.encode_chat_completion(ChatCompletionRequest(messages=[message])).tokens
        except Exception:  # noqa: BLE001 - a lone assistant or tool message is not a valid request
            return []
    return ids


def measure(rows, renderer, reference, naive, *, allowed_tail: list[int] | None = None) -> tuple[float, float]:
    manifest = plan_windows(rows, CONFIG, renderer, TOOLS)
    same = same_naive = total = 0
    for w in manifest.windows:
        if not w.loss_turns:
            continue
        window = render_training_window(rows, manifest, w.number, renderer, TOOLS)
        expected = reference(window)
        ids = window.input_ids
        if allowed_tail and ids[len(expected):] == allowed_tail:
            ids = ids[: len(expected)]
        same += ids == expected
        same_naive += naive(window) == expected
        total += 1
    return 100.0 * same / total, 100.0 * same_naive / total


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        for family in ("qwen2.5", "llama3.1", "deepseek-v3", "glm4"):
            tokenizer = build_family_tokenizer(base / family, family)
            renderer = HFChatRenderer(tokenizer, name=family)
            tail = [tokenizer.convert_tokens_to_ids("<|user|>")] if family == "glm4" else None
            ours, before = measure(agent_run(text=family != "glm4"), renderer,
                                   lambda w, t=tokenizer, r=renderer: hf_reference(t, r, w),
                                   lambda w, t=tokenizer, r=renderer: hf_naive(t, r, w), allowed_tail=tail)
            report(family, ours, before)
        mistral = MistralRenderer(build_mistral_tekken(base / "mistral"))
        ours, before = measure(agent_run(), mistral, lambda w: mistral_reference(mistral, w),
                               lambda w: mistral_naive(mistral, w))
        report("mistral", ours, before)
        try:
            HarmonyRenderer()
        except TemplateError as exc:
            print(f"render_matches_whole_conversation_gpt-oss: n/a % (target: >= 100) "
                  f"# not measurable here: {exc}", flush=True)


def report(family: str, ours: float, before: float) -> None:
    print(f"render_matches_whole_conversation_{family}: {ours:.1f} % (target: >= 100)", flush=True)
    print(f"render_matches_whole_conversation_{family}_per_message_before: {before:.1f} % (baseline)", flush=True)


if __name__ == "__main__":
    main()
