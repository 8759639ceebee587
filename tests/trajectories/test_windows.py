"""Windows rendered in real families' chat formats: one render per window, loss on exactly the
assistant's own output, every window within l_max, and refusals instead of wrong texts."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from apps.trajectories.splitting import IGNORE_INDEX, SplitConfig
from apps.trajectories.windows import (
    HFChatRenderer,
    TemplateError,
    TurnRow,
    normalise_tools,
    plan_windows,
    render_training_window,
    split_examples,
    without_reasoning,
)
from tests.support.chat_families import BASH_TOOL, build_family_tokenizer

TOOLS = normalise_tools(BASH_TOOL)
CONFIG = SplitConfig(l_max=700, prefix_end=1, overlap_turns=1, history_budget=150)


def agent_run(steps: int = 12, *, system: bool = True, text: bool = True) -> list[TurnRow]:
    """A research agent's run: a task, then tool calls (some with a sentence before) and results."""
    rows = [TurnRow("system", "You are a research agent.")] if system else []
    rows.append(TurnRow("user", "Reproduce the paper at /home/paper."))
    for i in range(steps):
        call = {"id": f"call{i}", "name": "bash", "arguments": {"cmd": f"python train.py --seed {i}"}}
        rows.append(TurnRow("assistant", f"Step {i}." if text and i % 2 == 0 else "", tool_calls=(call,)))
        rows.append(TurnRow("tool", f"epoch {i} loss 0.{i} accuracy 0.9{i}\n" * 3, tool_call_id=f"call{i}"))
    rows.append(TurnRow("assistant", "Done: the results match Table 2."))
    return rows


def _call_json(call: dict, key: str) -> str:
    return '{"name": "' + call["name"] + '", "' + key + '": ' + json.dumps(call["arguments"]) + "}"


# What each family's own template renders for an assistant turn after its prompt: the loss text.
EXPECTED_OUTPUT = {
    "qwen2.5": lambda row: "\n".join(([row.text] if row.text else []) + [
        "<tool_call>\n" + _call_json(c, "arguments") + "\n</tool_call>" for c in row.tool_calls]) + "<|im_end|>",
    "qwen2.5-generation": lambda row: "\n".join(([row.text] if row.text else []) + [
        "<tool_call>\n" + _call_json(c, "arguments") + "\n</tool_call>" for c in row.tool_calls]) + "<|im_end|>",
    # Llama 3.1 renders a tool-call turn as the call alone: its text is not part of the format
    "llama3.1": lambda row: (_call_json(row.tool_calls[0], "parameters") if row.tool_calls else row.text.strip())
    + "<|eot_id|>",
    "deepseek-v3": lambda row: (row.text + "".join(
        ("<｜tool▁calls▁begin｜>" if n == 0 else "\n") + "<｜tool▁call▁begin｜>function<｜tool▁sep｜>" + c["name"]
        + "\n```json\n" + json.dumps(c["arguments"]) + "\n```<｜tool▁call▁end｜>" for n, c in enumerate(row.tool_calls))
        + ("<｜tool▁calls▁end｜>" if row.tool_calls else "") + "<｜end▁of▁sentence｜>"),
}


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    made: dict[str, object] = {}

    def get(name: str):
        if name not in made:
            made[name] = build_family_tokenizer(tmp_path_factory.mktemp(name), name)
        return made[name]

    return get


def _reference_ids(tokenizer, renderer, window) -> list[int]:
    """The whole window through the tokenizer's own apply_chat_template, in one call."""
    return list(tokenizer.apply_chat_template(renderer.chat_messages(window.messages), tools=TOOLS, tokenize=True,
                                              return_dict=True)["input_ids"])


@pytest.mark.parametrize("name", ["qwen2.5", "qwen2.5-generation", "llama3.1", "deepseek-v3"])
def test_each_window_is_the_whole_conversation_render_with_loss_on_the_assistants_output(family, name):
    tokenizer = family(name)
    renderer = HFChatRenderer(tokenizer, name=name)
    rows = agent_run()
    manifest = plan_windows(rows, CONFIG, renderer, TOOLS)
    assert len(manifest.windows) > 1
    for w in manifest.windows:
        window = render_training_window(rows, manifest, w.number, renderer, TOOLS)
        assert window.input_ids == _reference_ids(tokenizer, renderer, window)
        assert len(window.input_ids) <= CONFIG.l_max
        trained = tokenizer.decode([t for t in window.labels if t != IGNORE_INDEX])
        assert trained == "".join(EXPECTED_OUTPUT[name](rows[i]) for i in w.loss_turns)


def test_qwen25_windows_carry_one_system_prompt_and_one_tools_section(family):
    tokenizer = family("qwen2.5")
    renderer = HFChatRenderer(tokenizer, name="qwen2.5")
    rows = agent_run(system=False)
    _manifest, examples = split_examples(rows, SplitConfig(l_max=700, prefix_end=0, history_budget=150), renderer,
                                         TOOLS)
    for example in examples:
        text = tokenizer.decode(example.input_ids)
        # one default system prompt (the conversation has none) and one tools section per window
        assert text.count("You are Qwen, created by Alibaba Cloud.") == 1 and text.count("# Tools") == 1
        assert text.startswith("<|im_start|>system\nYou are Qwen")


def test_llama31_windows_have_one_bos_one_date_header_and_tool_results_in_the_ipython_role(family):
    tokenizer = family("llama3.1")
    renderer = HFChatRenderer(tokenizer, name="llama3.1")
    _manifest, examples = split_examples(agent_run(), CONFIG, renderer, TOOLS)
    for example in examples:
        text = tokenizer.decode(example.input_ids)
        assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n"
                               "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n")
        assert text.count("<|begin_of_text|>") == 1 and text.count("Cutting Knowledge Date") == 1
        # the tools go into the first user message, once; results are ipython turns
        assert text.count("Given the following functions") == 1 and "<|start_header_id|>ipython" in text
        assert "<|start_header_id|>tool" not in text


def test_glm4_calls_are_metadata_turns_results_observations_and_the_window_ends_with_its_stop_token(family):
    tokenizer = family("glm4")
    renderer = HFChatRenderer(tokenizer, name="glm4")
    rows = agent_run(text=False)
    manifest = plan_windows(rows, CONFIG, renderer, TOOLS)
    assert len(manifest.windows) > 1
    for w in manifest.windows:
        window = render_training_window(rows, manifest, w.number, renderer, TOOLS)
        reference = _reference_ids(tokenizer, renderer, window)
        text = tokenizer.decode(window.input_ids)
        assert text.startswith("[gMASK]<sop><|system|>") and "<|observation|>\nepoch" in text
        # the render is the template's, plus GLM's chat stop token after a final loss turn (as GLM's
        # own fine-tuning does): the model learns to stop
        assert window.input_ids[: len(reference)] == reference and window.input_ids[len(reference):] == (
            [tokenizer.convert_tokens_to_ids("<|user|>")] if rows[w.target_end].role == "assistant" else [])
        assert len(window.input_ids) <= CONFIG.l_max
        # loss: the metadata (function name), the arguments and the next role token, never a header
        trained = tokenizer.decode([t for t in window.labels if t != IGNORE_INDEX])
        expected = ""
        for i in w.loss_turns:
            row = rows[i]
            body = (row.tool_calls[0]["name"] + "\n" + json.dumps(row.tool_calls[0]["arguments"])
                    if row.tool_calls else "\n" + row.text)
            expected += body + ("<|observation|>" if i + 1 < len(rows) and i < w.target_end else "<|user|>")
        assert trained == expected


def test_a_template_that_drops_earlier_reasoning_is_refused_naming_the_turn(family):
    renderer = HFChatRenderer(family("qwen3"), name="qwen3")
    rows = [TurnRow("system", "s"), TurnRow("user", "task"),
            TurnRow("assistant", "first answer", reasoning="I should list the files."),
            TurnRow("user", "and now?"), TurnRow("assistant", "second answer", reasoning="Then train.")]
    with pytest.raises(TemplateError, match=r"qwen3, turn 2: the template rewrites this turn") as caught:
        split_examples(rows, SplitConfig(l_max=4000, prefix_end=1), renderer)
    assert "I should list the files" in str(caught.value)  # what changed: the reasoning that vanished


def test_a_template_that_keeps_the_reasoning_of_the_windows_turns_is_trained_with_it(family):
    tokenizer = family("qwen3")
    renderer = HFChatRenderer(tokenizer, name="qwen3")
    rows = [TurnRow("system", "s"), TurnRow("user", "task"),
            TurnRow("assistant", "first answer", reasoning="List the files."), TurnRow("tool", "paper.md"),
            TurnRow("assistant", "second answer", reasoning="Then train.")]
    _manifest, (example,) = split_examples(rows, SplitConfig(l_max=4000, prefix_end=1), renderer)
    trained = tokenizer.decode([t for t in example.labels if t != IGNORE_INDEX])
    assert trained == ("<think>\nList the files.\n</think>\n\nfirst answer<|im_end|>"
                       "<think>\nThen train.\n</think>\n\nsecond answer<|im_end|>")


def _thinking_run(steps: int = 3) -> list[TurnRow]:
    """An agent run whose every answer comes with its reasoning (a thinking teacher's)."""
    return [replace(row, reasoning=f"Reasoning before turn {i}: check the logs.") if row.role == "assistant" else row
            for i, row in enumerate(agent_run(steps))]


def test_qwen3_trains_each_turns_reasoning_in_its_think_block_and_nothing_of_it_when_left_out(family):
    tokenizer = family("qwen3")
    renderer = HFChatRenderer(tokenizer, name="qwen3")
    rows = _thinking_run()
    config = SplitConfig(l_max=4000, prefix_end=1)
    _manifest, (kept,) = split_examples(rows, config, renderer, TOOLS)
    trained = tokenizer.decode([t for t in kept.labels if t != IGNORE_INDEX])
    for i, row in enumerate(rows):
        if row.role == "assistant":
            assert f"<think>\nReasoning before turn {i}: check the logs.\n</think>\n\n" in trained
    # Left out: no reasoning anywhere, and Qwen3's empty <think> block (which it writes only for a
    # conversation's last turn) neither refused nor trained on
    _manifest, (bare,) = split_examples(without_reasoning(rows), config, renderer, TOOLS)
    whole = tokenizer.decode(bare.input_ids)
    trained = tokenizer.decode([t for t in bare.labels if t != IGNORE_INDEX])
    assert "Reasoning before" not in whole and "<think>" not in trained
    assert trained.startswith("Step 0.\n<tool_call>") and trained.endswith(
        "</tool_call><|im_end|>Done: the results match Table 2.<|im_end|>")
    assert whole.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nDone: the results match Table 2.<|im_end|>\n")


def test_the_default_follows_whether_the_template_shows_reasoning_on_trained_turns(family):
    from apps.trajectories.chat_native import HarmonyRenderer, MistralRenderer

    assert HFChatRenderer(family("qwen3")).renders_reasoning
    assert not HFChatRenderer(family("qwen2.5")).renders_reasoning  # no syntax: it would be text
    assert HarmonyRenderer.renders_reasoning and not MistralRenderer.renders_reasoning


def test_llama31_refuses_two_tool_calls_in_one_turn_with_the_templates_own_reason(family):
    renderer = HFChatRenderer(family("llama3.1"), name="llama3.1")
    rows = agent_run(2)
    calls = ({"id": "a", "name": "bash", "arguments": {"cmd": "ls"}}, {"id": "b", "name": "bash", "arguments": {}})
    rows[2] = TurnRow("assistant", "", tool_calls=calls)
    with pytest.raises(TemplateError, match="llama3.1.*single tool-calls"):
        split_examples(rows, SplitConfig(l_max=4000, prefix_end=1), renderer, TOOLS)


def test_glm4_refuses_a_turn_with_text_beside_its_tool_call(family):
    renderer = HFChatRenderer(family("glm4"), name="glm4")
    with pytest.raises(TemplateError, match="glm4: turn 2 has text and 1 tool call"):
        split_examples(agent_run(2), SplitConfig(l_max=4000, prefix_end=1), renderer, TOOLS)


def test_a_template_without_tool_syntax_gets_the_call_as_json_in_the_content(tmp_path):
    from worker.training.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(tmp_path, vocab_size=300)
    renderer = HFChatRenderer(tokenizer)
    _manifest, (example,) = split_examples(agent_run(1), SplitConfig(l_max=4000, prefix_end=1), renderer)
    trained = tokenizer.decode([t for t in example.labels if t != IGNORE_INDEX])
    assert '"name": "bash"' in trained and "python train.py --seed 0" in trained


@pytest.mark.parametrize("name", ["qwen2.5", "llama3.1", "deepseek-v3", "glm4", "mistral"])
def test_every_window_fits_l_max_in_real_tokens_across_budgets(family, name, tmp_path):
    from apps.trajectories.chat_native import MistralRenderer
    from tests.support.chat_families import build_mistral_tekken

    renderer = (MistralRenderer(build_mistral_tekken(tmp_path)) if name == "mistral"
                else HFChatRenderer(family(name), name=name))
    rows = agent_run(20, text=name != "glm4")
    long_rows = [TurnRow(r.role, r.text, reasoning=r.reasoning, tool_calls=r.tool_calls, tool_call_id=r.tool_call_id)
                 if r.role != "tool" else TurnRow("tool", r.text * 12, tool_call_id=r.tool_call_id) for r in rows]
    for l_max, history in ((800, 100), (1100, 0.4), (1600, 0.25)):
        config = SplitConfig(l_max=l_max, prefix_end=1, overlap_turns=2, history_budget=history, snippet_min_tokens=8)
        manifest, examples = split_examples(long_rows, config, renderer, TOOLS)
        assert examples and all(len(e.input_ids) <= l_max for e in examples)
        assert any(w.overlong or w.history and any(k.cut for k in w.history) for w in manifest.windows)


# ------------------------------------------------------------------------------- Mistral, gpt-oss


def _mistral_request_tokens(renderer, window, tools) -> list[int]:
    """The same window as one mistral-common request, built here from the window's messages."""
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    messages, _origin = renderer._messages(window.messages)
    return list(renderer.tokenizer.encode_chat_completion(
        ChatCompletionRequest(messages=messages, tools=renderer._tools(tools))).tokens)


def test_a_mistral_folder_renders_each_window_as_one_mistral_common_request(tmp_path):
    from apps.trajectories.chat_native import MistralRenderer, renderer_for
    from tests.support.chat_families import build_mistral_tekken

    folder = build_mistral_tekken(tmp_path / "mistral")
    renderer = renderer_for(None, folder)
    assert isinstance(renderer, MistralRenderer)
    rows = agent_run(10)
    manifest = plan_windows(rows, SplitConfig(l_max=900, prefix_end=1, overlap_turns=1, history_budget=150), renderer,
                            TOOLS)
    assert len(manifest.windows) > 1
    for w in manifest.windows:
        window = render_training_window(rows, manifest, w.number, renderer, TOOLS)
        assert window.input_ids == _mistral_request_tokens(renderer, window, TOOLS)
        assert len(window.input_ids) <= 900
        text = renderer.decode(window.input_ids)
        assert text.startswith("<s>[SYSTEM_PROMPT]You are a research agent.[/SYSTEM_PROMPT]")
        assert text.count("[AVAILABLE_TOOLS]") == 1
        trained = renderer.decode([t for t in window.labels if t != IGNORE_INDEX])
        expected = ""
        for i in w.loss_turns:
            row = rows[i]
            expected += row.text + "".join(
                "[TOOL_CALLS]" + c["name"] + "[CALL_ID]" + renderer._call_id(c["id"]) + "[ARGS]" + json.dumps(c["arguments"])
                for c in row.tool_calls) + "</s>"
        assert trained == expected


def test_mistral_windows_turn_a_tool_result_without_its_call_into_a_user_message(tmp_path):
    from apps.trajectories.chat_native import renderer_for
    from apps.trajectories.windows import WindowMessage
    from tests.support.chat_families import build_mistral_tekken

    renderer = renderer_for(None, build_mistral_tekken(tmp_path / "mistral"))
    messages = [WindowMessage("system", "s", 0), WindowMessage("user", "task", 1),
                WindowMessage("user", "[3 earlier turns omitted]", part="marker"),
                WindowMessage("tool", "paper.md", 5, tool_call_id="gone"),
                WindowMessage("assistant", "Done.", 6, loss=True)]
    ids, labels = renderer.render(messages, ())
    text = renderer.decode(ids)
    assert "[tool result]\npaper.md" in text and "[TOOL_RESULTS]" not in text
    assert renderer.decode([t for t in labels if t != IGNORE_INDEX]) == "Done.</s>"


def test_a_gpt_oss_folder_without_harmonys_vocabulary_is_refused_with_the_way_to_provide_it(tmp_path, monkeypatch):
    from apps.trajectories.chat_native import native_renderer

    folder = tmp_path / "gpt-oss-20b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt_oss"}))
    # a vocabulary folder without the file: harmony cannot load its encoding (and downloads nothing)
    (tmp_path / "vocab").mkdir()
    monkeypatch.setenv("TIKTOKEN_ENCODINGS_BASE", str(tmp_path / "vocab"))
    with pytest.raises(TemplateError, match=r"o200k_base\.tiktoken.*TIKTOKEN_ENCODINGS_BASE"):
        native_renderer(folder)


def test_harmony_messages_put_reasoning_text_and_calls_on_their_channels():
    from apps.trajectories.chat_native import HarmonyRenderer
    from apps.trajectories.windows import WindowMessage

    turn = WindowMessage("assistant", "Listing the files.", 3, reasoning="The paper is in /home/paper.",
                         tool_calls=({"id": "c1", "name": "bash", "arguments": {"cmd": "ls"}},))
    analysis, preamble, call = HarmonyRenderer.messages(turn, {})
    assert (analysis.channel, preamble.channel, call.channel) == ("analysis", "commentary", "commentary")
    assert call.recipient == "functions.bash" and call.content[0].text == '{"cmd": "ls"}'
    (result,) = HarmonyRenderer.messages(WindowMessage("tool", "paper.md", 4, tool_call_id="c1"), {"c1": "bash"})
    assert result.author.name == "functions.bash" and result.recipient == "assistant"
