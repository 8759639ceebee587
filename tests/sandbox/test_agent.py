"""The agent loop against the loopback model server, through real sandboxes."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest

from apps.judging.llm import EndpointConfig, make_client
from apps.trajectories.models import Trajectory, TurnAnnotation
from apps.trajectories.recorder import TrajectoryRecorder
from tests.sandbox.conftest import Script
from tests.support.openai_stub import tool_call
from worker.agent import AgentConfig, AgentTask, run_agent

TASK = AgentTask(paper_markdown="# Toy paper\nThe answer is 6 * 7.", instructions="Write the answer to answer.txt.",
                 blacklist=["https://github.com/toy-author/official-code"])


def say(content: str = "", *calls: dict) -> dict:
    return {"content": content, "tool_calls": list(calls)}


def solving_script() -> list[dict]:
    return [
        say("Reading the paper first.", tool_call("read_file_chunk", "c1", file="/home/paper/paper.md")),
        say("", tool_call("write_file", "c2", file="solve.py", content="print(6 * 7)\n")),
        say("", tool_call("bash", "c3", cmd="python3 solve.py > answer.txt && cat answer.txt")),
        say("Checking.", tool_call("python", "c4", code="print(open('answer.txt').read().strip() == '42')")),
        say("Done.", tool_call("submit", "c5", end_message="answer.txt holds 42")),
    ]


@pytest.fixture
def client(stub):
    config = EndpointConfig(name="teacher", model="stub-teacher", base_url=stub.base_url, max_retries=0,
                            price_input_per_m=1.0, price_output_per_m=2.0)
    with make_client(config) as chat:
        yield chat


@pytest.fixture
def agent_box(open_box, tmp_path):
    """``agent_box(backend, **fields)``: a sandbox with TASK's paper mounted read-only."""

    def make(backend: str = "bwrap", **fields):
        fields.setdefault("mounts_ro", TASK.write_files(tmp_path / f"paper-{uuid.uuid4().hex[:8]}"))
        return open_box(backend, **fields)

    return make


@pytest.mark.django_db
def test_a_scripted_teacher_solves_the_toy_task_and_each_turn_is_saved_as_it_happens(stub, client, agent_box, tmp_path):
    # bubblewrap here; the same script runs in a podman container in test_agent_run_job.py
    stub.state.responder = Script(*solving_script())
    recorder = TrajectoryRecorder.start(source="distilled", model="stub-teacher", title="toy")
    seen_live = []

    def on_turn(turn):
        recorder.add_turn(turn)
        row = Trajectory.objects.get(pk=recorder.trajectory.pk)
        seen_live.append((row.live, row.turn_count, turn.index))

    box = agent_box()
    result = run_agent(client, box, TASK, AgentConfig(max_steps=10, l_max=8192), on_turn=on_turn)

    assert result.end_state == "submitted" and result.steps == 5 and not result.flagged
    assert [t.role for t in result.turns] == ["system", "user"] + ["assistant", "tool"] * 5
    assert "1: # Toy paper" in result.turns[3].content
    assert seen_live == [(True, i + 1, i) for i in range(len(result.turns))]  # stored one by one, live
    # a snapshot on the turns that changed the submission (write, run), none on the others
    commits = {t.index: t.submission_commit for t in result.turns if t.role == "tool"}
    assert [i for i, c in commits.items() if c] == [5, 7]
    assert result.final_commit == commits[7]
    at_write = box.export_submission(tmp_path / "at-write", commits[5])
    assert sorted(p.name for p in at_write.iterdir()) == ["solve.py"]
    final = box.export_submission(tmp_path / "final", result.final_commit)
    assert (final / "answer.txt").read_text() == "42\n"
    assert result.usage["calls"] == 5 and result.usage["cost_usd"] > 0

    trajectory = recorder.finish(result)
    assert (trajectory.end_state, trajectory.live, trajectory.turn_count) == ("submitted", False, 12)
    assert trajectory.meta["final_commit"] == result.final_commit
    stored = list(trajectory.turns.order_by("index").values_list("role", "tool_call_id", "meta"))
    assert stored[7][:2] == ("tool", "c3") and stored[7][2]["submission_commit"] == commits[7]
    assert stored[2][2]["prompt_tokens"] > 0


@pytest.mark.django_db
def test_a_run_that_clones_the_official_code_is_flagged_stopped_and_rejected(stub, client, agent_box):
    stub.state.responder = Script(
        say("", tool_call("bash", "c1", cmd="git clone https://github.com/toy-author/official-code.git")),
        then=say("", tool_call("submit", "c9")),
    )
    recorder = TrajectoryRecorder.start(source="distilled", model="stub-teacher")
    result = run_agent(client, agent_box(), TASK, AgentConfig(max_steps=10, l_max=8192), on_turn=recorder.add_turn)
    assert result.flagged and result.end_state == "error" and "blacklisted" in result.error
    assert result.blacklist_hits[0]["turn"] == 2
    trajectory = recorder.finish(result)
    assert trajectory.review == Trajectory.Review.REJECTED and "official-code" in trajectory.review_reason
    note = TurnAnnotation.objects.get(trajectory=trajectory)
    assert (note.turn_index, note.label.name) == (2, "blacklisted access")


def test_step_limit_and_answers_without_tool_calls(stub, client, agent_box):
    stub.state.responder = Script(then=say("I am thinking about it."))
    result = run_agent(client, agent_box(), TASK, AgentConfig(max_steps=3, l_max=8192))
    assert result.end_state == "step_limit" and result.steps == 3
    nudges = [t for t in result.turns if t.role == "user"][1:]
    assert len(nudges) == 3 and "did not call a tool" in nudges[0].content


def test_the_wall_clock_limit_ends_the_run_and_kills_the_running_tool(stub, client, agent_box):
    stub.state.responder = Script(say("", tool_call("bash", "c1", cmd="sleep 30")), then=say("", tool_call("submit")))
    started = time.monotonic()
    result = run_agent(client, agent_box(), TASK, AgentConfig(max_steps=10, time_limit_s=1.5, l_max=8192))
    assert result.end_state == "timed_out" and time.monotonic() - started < 8
    assert "[timed out after" in result.turns[3].content


def test_injection_through_tool_arguments_stays_inside_the_sandbox(stub, client, agent_box):
    attempts = [
        tool_call("write_file", "a", file="$(touch /home/submission/pwned1).txt", content="x"),
        tool_call("read_file_chunk", "b", file="x; touch /home/submission/pwned2"),
        tool_call("search_files", "c", pattern="'; touch /home/submission/pwned3; echo '", path="-rf"),
        tool_call("read_file_chunk", "d", file="/etc/hostname`touch /home/submission/pwned4`", start_line="1; id"),
        tool_call("write_file", "e", file="/home/paper/paper.md", content="rewritten"),
        tool_call("write_file", "f", file="../../../etc/klong-evil", content="x"),
        tool_call("python", "g", code="import os; print(sorted(os.listdir('/home/submission')))"),
    ]
    stub.state.responder = Script(say("", *attempts), then=say("", tool_call("submit")))
    box = agent_box()
    result = run_agent(client, box, TASK, AgentConfig(max_steps=3, l_max=8192))
    outputs = {t.tool_call_id: t.content for t in result.turns if t.role == "tool"}
    assert "Bad arguments" in outputs["d"]  # start_line is not a number
    assert "failed" in outputs["e"] and "failed" in outputs["f"]
    assert "pwned" not in outputs["g"]
    listing = box.exec("ls -A /home/submission").stdout.split()
    assert not [name for name in listing if name.startswith("pwned")]
    assert box.read_file("/home/paper/paper.md").startswith(b"# Toy paper")
    assert not os.path.exists("/etc/klong-evil")


def test_the_context_pins_the_paper_reading_prefix_and_truncates_older_turns(stub, client, agent_box):
    long_output = [say("", tool_call("bash", f"c{i}", cmd=f"python3 -c \"print('step {i} ' * 120)\""))
                   for i in range(10)]
    stub.state.responder = Script(
        say("Reading.", tool_call("read_file_chunk", "paper", file="/home/paper/paper.md")),
        *long_output, then=say("", tool_call("submit")),
    )
    config = AgentConfig(max_steps=12, l_max=1400, reserve_tokens=200)
    result = run_agent(client, agent_box(), TASK, config)
    assert result.end_state == "submitted"
    requests = [r["messages"] for r in stub.requests]
    last = requests[-1]
    # the pinned prefix: system prompt, task, and the paper-reading step, verbatim in every call
    for messages in requests[2:]:
        assert [m["role"] for m in messages[:4]] == ["system", "user", "assistant", "tool"]
        assert messages[3]["tool_call_id"] == "paper" and "Toy paper" in messages[3]["content"]
    # older steps are dropped or cut so the context stays within the window
    assert any("earlier turns omitted" in str(m.get("content")) for m in last)
    assert all(sum(len(str(m.get("content") or "")) + len(json.dumps(m.get("tool_calls", []))) for m in r) / 4
               <= config.l_max - config.reserve_tokens for r in requests)
    # a tool result whose call was cut away is sent as plain text, never as an orphan tool message
    ids = {c["id"] for m in last if m["role"] == "assistant" for c in m.get("tool_calls", [])}
    assert all(m["tool_call_id"] in ids for m in last if m["role"] == "tool")
    assert len(last) < len(result.turns) - 1


def test_text_tool_calls_work_for_models_without_native_tools(stub, agent_box):
    config = EndpointConfig(name="local-ish", model="m", base_url=stub.base_url, max_retries=0)
    stub.state.responder = Script(
        '<tool_call>{"name": "bash", "arguments": {"cmd": "echo 42 > answer.txt"}}</tool_call>',
        "Done.\n<tool_call>{\"name\": \"submit\", \"arguments\": {}}</tool_call>",
    )
    box = agent_box()
    with make_client(config) as chat:
        result = run_agent(chat, box, TASK, AgentConfig(max_steps=5, l_max=8192, tool_format="text"))
    assert result.end_state == "submitted"
    assert box.read_file("/home/submission/answer.txt") == b"42\n"
    second = stub.requests[1]
    assert "tools" not in second and all("tool_calls" not in m for m in second["messages"])
    assert '"name": "bash"' in second["messages"][2]["content"]  # the call as training renders it


def test_the_agent_runs_on_the_local_transformers_backend_with_exact_token_counts(agent_box, tmp_path):
    from transformers import AutoTokenizer

    from tests.support.tiny_model import build_tiny_chat_model

    folder = build_tiny_chat_model(tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    config = EndpointConfig(name="policy", model=str(folder), backend="transformers", params={"max_tokens": 8})
    agent_config = AgentConfig(max_steps=2, l_max=2048, reserve_tokens=64, tokenizer=tokenizer)
    result = run_agent(make_client(config), agent_box(), TASK, agent_config)
    # a random tiny model writes no tool call: it is nudged, and the run ends at its step limit
    assert result.end_state == "step_limit" and result.steps == 2, result.error
    answers = [t for t in result.turns if t.role == "assistant"]
    assert all(0 < t.meta["prompt_tokens"] <= agent_config.l_max for t in answers)
    assert answers[1].meta["prompt_tokens"] > answers[0].meta["prompt_tokens"]  # the nudge and answer are in
