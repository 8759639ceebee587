from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from apps.trajectories.splitting import IGNORE_INDEX, SplitManifest
from apps.trajectories.tokens import counter_for
from tests.trajectories.factories import make_trajectory, tiny_tokenizer
from tests.trajectories.helpers import export_zip

pytestmark = pytest.mark.django_db

LONG = {i: "word " * 200 for i in range(2, 120)}  # ~250 estimated tokens per turn


def test_the_split_page_plans_windows_from_the_form(client_for):
    trajectory = make_trajectory(120, texts=LONG)
    response = client_for("viewer").get(f"/trajectories/{trajectory.pk}/split/?l_max=4000&overlap_turns=2")
    figure = response.context["figure"]
    assert response.status_code == 200 and len(figure["windows"]) > 3
    assert all(w["tokens"]["total"] <= 4000 for w in figure["windows"])
    assert figure["windows"][1]["overlap_prev"] == 2


def test_an_htmx_config_change_returns_only_the_plan(client_for):
    trajectory = make_trajectory(120, texts=LONG)
    response = client_for("viewer").get(f"/trajectories/{trajectory.pk}/split/?l_max=8000", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and 'id="split-figure"' in html and "<html" not in html


def test_an_impossible_config_is_explained_not_an_error_page(client_for):
    trajectory = make_trajectory(120, texts=LONG)
    response = client_for("viewer").get(f"/trajectories/{trajectory.pk}/split/?l_max=abc", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and b"l_max" in response.content and b'role="alert"' in response.content


def test_the_inspector_shows_the_window_text_with_markers_and_loss(client_for):
    trajectory = make_trajectory(120, texts=LONG)
    response = client_for("viewer").get(f"/trajectories/{trajectory.pk}/split/window/3/?l_max=4000")
    window = response.context["window"]
    parts = [m.part for m in window.messages]
    assert parts[0] == "prefix" and "target" in parts
    assert any(m.loss for m in window.messages) and all(m.role == "assistant" for m in window.messages if m.loss)
    assert b'class="loss"' in response.content


def test_the_inspector_escapes_agent_text(client_for):
    trajectory = make_trajectory(10, texts={4: "<script>alert(1)</script>"})
    html = client_for("viewer").get(f"/trajectories/{trajectory.pk}/split/window/1/?l_max=4000").content.decode()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_the_command_prints_the_split_manifest_as_json(capsys):
    trajectory = make_trajectory(120, texts=LONG)
    call_command("split_trajectory", str(trajectory.pk), "--l-max", "4000", "--overlap", "1", "--json")
    manifest = SplitManifest.from_json(capsys.readouterr().out)
    assert manifest.config.l_max == 4000 and manifest.config.overlap_turns == 1
    assert all(w.total_tokens <= 4000 for w in manifest.windows)


def test_a_pinned_prefix_is_used_by_the_split(client_for):
    trajectory = make_trajectory(120, texts=LONG)
    client_for("curator").post(f"/trajectories/{trajectory.pk}/split/prefix/", {"prefix_end": "5"})
    response = client_for("viewer").get(f"/trajectories/{trajectory.pk}/split/?l_max=8000")
    assert response.context["manifest"].prefix_end == 5


def test_no_loss_turns_are_never_trained(client_for):
    trajectory = make_trajectory(120, texts=LONG)
    trajectory.turns.filter(index=50).update(no_loss=True)
    manifest = client_for("viewer").get(f"/trajectories/{trajectory.pk}/split/?l_max=4000").context["manifest"]
    assert all(50 not in w.loss_turns for w in manifest.windows)


def test_the_inspector_renders_the_window_with_the_chat_template(client_for, settings, tmp_path):
    from transformers import AutoTokenizer

    folder = tiny_tokenizer(tmp_path / "tok")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                               "{% endfor %}")
    tokenizer.save_pretrained(folder)
    settings.KLONG_TOKENIZER_PATH = str(folder)
    counter_for.cache_clear()
    trajectory = make_trajectory(12, texts={5: "<b>agent text</b>"})
    response = client_for("viewer").get(f"/trajectories/{trajectory.pk}/split/window/1/?l_max=4000")
    html = response.content.decode()
    assert "&lt;|im_start|&gt;system" in html and "&lt;b&gt;agent text&lt;/b&gt;" in html


def test_the_inspector_shows_exactly_the_tokens_the_export_writes_in_the_models_chat_format(client_for, settings,
                                                                                           tmp_path):
    from apps.trajectories import split_service
    from apps.trajectories.windows import render_training_window
    from tests.support.chat_families import build_family_tokenizer

    tokenizer = build_family_tokenizer(tmp_path / "qwen", "qwen2.5")
    settings.KLONG_TOKENIZER_PATH = str(tmp_path / "qwen")
    counter_for.cache_clear()
    split_service._renderer.cache_clear()
    tools = [{"type": "function", "function": {"name": "bash", "description": "Run a command",
                                               "parameters": {"type": "object", "properties": {}}}}]
    trajectory = make_trajectory(30, texts={i: "the agent runs ls " * 8 for i in range(2, 30)}, meta={"tools": tools})
    archive = export_zip(client_for("viewer"), f"ids={trajectory.pk}&l_max=900")
    rows = [json.loads(line) for line in archive.read("dataset.jsonl").decode().splitlines()]
    assert len(rows) > 1 and "HFChatRenderer" in json.loads(archive.read("manifest.json"))["chat_format"]
    renderer = split_service.configured_renderer()
    manifest = split_service.training_plan(trajectory, split_service.config_from({"l_max": 900}, trajectory), renderer)
    for row in rows:
        window = render_training_window(split_service.turn_rows(trajectory), manifest, row["window"], renderer,
                                        split_service.declared_tools(trajectory))
        # one render of the whole window, with the declared tools: one system prompt, one tools section
        reference = tokenizer.apply_chat_template(renderer.chat_messages(window.messages), tools=tools, tokenize=True,
                                                  return_dict=True)["input_ids"]
        assert row["input_ids"] == list(reference) and len(row["input_ids"]) <= 900
        text = tokenizer.decode(row["input_ids"])
        assert text.count("<|im_start|>system") == 1 and text.count("# Tools") == 1
        if row["window"] > 2:
            continue  # the inspector renders through the same function: two windows show it
        inspected = client_for("viewer").get(
            f"/trajectories/{trajectory.pk}/split/window/{row['window']}/?l_max=900").context["window"]
        assert "".join(text for text, _loss in inspected.tokens) == text
        trained = "".join(text for text, loss in inspected.tokens if loss)
        assert trained == tokenizer.decode([t for t in row["labels"] if t != IGNORE_INDEX])


def test_the_inspector_shows_the_reasoning_trained_on_or_left_out_as_the_form_says(client_for, settings, tmp_path):
    from tests.support.chat_families import build_family_tokenizer

    build_family_tokenizer(tmp_path / "qwen3", "qwen3")
    settings.KLONG_TOKENIZER_PATH = str(tmp_path / "qwen3")
    counter_for.cache_clear()
    trajectory = make_trajectory(8, reasoning={4: "The file list says train.py exists."})
    viewer = client_for("viewer")
    for query, kept in (("", True), ("&train_on_reasoning=false", False)):
        url = f"/trajectories/{trajectory.pk}/split/window/1/?l_max=4000{query}"
        tokens = viewer.get(url).context["window"].tokens
        trained = "".join(text for text, loss in tokens if loss)
        assert ("<think>\nThe file list says train.py exists.\n</think>" in trained) is kept
    page = viewer.get(f"/trajectories/{trajectory.pk}/split/?train_on_reasoning=false").content.decode()
    assert '<option value="false" selected>left out</option>' in page
    refused = viewer.get(f"/trajectories/{trajectory.pk}/split/window/1/?train_on_reasoning=sometimes")
    assert refused.status_code == 400 and "is not yes or no" in refused.content.decode()
