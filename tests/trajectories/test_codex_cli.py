"""Codex CLI sessions and tool calls written as content parts: every call shown, counted and trained
once, the model named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apps.trajectories import split_service
from apps.trajectories.formats import detect_format, read_trajectories
from apps.trajectories.models import Trajectory
from apps.trajectories.services import import_trajectories
from apps.trajectories.splitting import SplitConfig
from apps.trajectories.tokens import EstimateCounter, turn_text
from tests.trajectories.factories import codex_rollout

PATCH = "*** Begin Patch\n*** Update File: train.py\n@@\n-lr = 1e-3\n+lr = 3e-4\n*** End Patch\n"


def test_a_codex_rollout_reads_each_call_once_with_its_output_and_the_model(tmp_path: Path) -> None:
    path = codex_rollout(tmp_path / "rollout-2025-10-02T10-00-00-0199.jsonl", patch=PATCH)
    assert detect_format(path) == "codex-cli"
    (run,) = read_trajectories(path)
    assert run.model == "gpt-5-codex" and run.scaffold == "codex-cli" and run.format_version == "0.46.0"
    assert run.title == "Reproduce table 2 of the paper" and run.end_state == "submitted"
    calls = [c for t in run.turns for c in t.tool_calls]
    assert [c["name"] for c in calls] == ["shell", "apply_patch"]
    assert calls[0]["arguments"] == {"command": ["bash", "-lc", "python train.py"], "workdir": "/w"}
    assert calls[1]["arguments"] == PATCH  # free-form input, kept as written
    # The terminal events repeat the messages and calls: none of them becomes a turn.
    texts = [t.text for t in run.turns]
    assert texts.count("Done: lr is now 3e-4.") == 1 and not any('"type"' in t for t in texts)
    assert [t.role for t in run.turns] == ["user", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    shell_result = run.turns[3]
    assert (shell_result.tool_call_id, shell_result.text) == ("call_1", "epoch 1 loss 0.3\n")
    assert shell_result.meta == {"exit_code": 0, "duration_seconds": 1.5}
    assert run.turns[2].reasoning == "**Running the training script**"
    assert run.meta["token_usage"]["total_tokens"] == 5400


def test_tool_call_content_parts_become_one_call_each_never_text(tmp_path: Path) -> None:
    call = {"type": "tool_call", "id": "call_7", "name": "bash", "args": {"cmd": "ls"}}
    messages = [
        {"role": "user", "content": "list the files"},
        {"role": "assistant", "content": [{"type": "text", "text": "Listing."}, call],
         "tool_calls": [{"id": "call_7", "type": "function", "function": {"name": "bash", "arguments": '{"cmd": "ls"}'}}]},
        {"role": "tool", "tool_call_id": "call_7", "content": "a.py"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"cmd": "pwd"}}]},
    ]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"messages": messages, "model": "claude"}))
    (run,) = read_trajectories(path)
    assert run.turns[1].text == "Listing."
    assert run.turns[1].tool_calls == [{"id": "call_7", "name": "bash", "arguments": {"cmd": "ls"}}]
    assert run.turns[3].text == "" and run.turns[3].tool_calls == [
        {"id": "toolu_1", "name": "bash", "arguments": {"cmd": "pwd"}}]


@pytest.mark.django_db
def test_an_imported_codex_session_counts_and_trains_each_call_once(tmp_path: Path) -> None:
    path = codex_rollout(tmp_path / "rollout.jsonl", patch=PATCH)
    (imported,) = import_trajectories(path).trajectories
    trajectory = Trajectory.objects.get(pk=imported.id)
    assert (trajectory.model_name, trajectory.title) == ("gpt-5-codex", "Reproduce table 2 of the paper")
    turns = list(trajectory.turns.order_by("index"))
    expected = EstimateCounter().count([turn_text(t.text, t.reasoning, t.tool_calls) for t in turns])
    assert trajectory.total_tokens == sum(expected)
    manifest, texts = split_service.plan_for(trajectory, SplitConfig(l_max=100_000))
    trained = "".join(texts[i] for w in manifest.windows for i in w.loss_turns)
    assert trained.count("python train.py") == 1 and "tool_call" not in trained
