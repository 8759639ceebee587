"""Trajectory import formats against the real sample files and small bad inputs.

Expected counts are computed here with plain json / zipfile, independently of the readers.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.trajectories.formats import (
    FORMATS,
    ROLES,
    ParsedTrajectory,
    ParsedTurn,
    TrajectoryFormatError,
    detect_format,
    read_trajectories,
    write_klong_jsonl,
)
from apps.trajectories.formats.reader import _READERS

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "trajectories"

EXPECTED_FORMAT = {
    "swe-agent/marshmallow-1867_function_calling_replace_from_source.traj": "swe-agent",
    "swe-agent/gpt4_pydicom-1458.traj": "swe-agent",
    "swe-agent/humanevalfix-python-0.traj": "swe-agent",
    "mini-swe-agent/django__django-13265.deepseek-chat.traj.json": "mini-swe-agent",
    "mini-swe-agent/matplotlib__matplotlib-20859.gemini-3-pro.v1.traj.json": "mini-swe-agent",
    "mini-swe-agent/test_data_github_issue.traj.json": "mini-swe-agent",
    "inspect-ai/browser.json": "inspect-ai-json",
    "inspect-ai/class-eval.eval": "inspect-ai-eval",
    "openhands/resolver_mock_output.jsonl": "openhands-jsonl",
    "openhands/runtime_trajs_basic.json": "openhands",
    "openhands/openagentsafety_v1sdk_output.jsonl": "openhands-jsonl",
    "harbor-atif/openhands_hello-world.trajectory.json": "harbor-atif",
    "harbor-atif/terminus_2_hello-world-context-summarization-linear-history.trajectory.json": "harbor-atif",
}


def load(relative: str) -> Any:
    return json.loads((DATA / relative).read_text(encoding="utf-8"))


def read_all(path: Path, **kwargs: Any) -> list[ParsedTrajectory]:
    return list(read_trajectories(path, **kwargs))


def expected_turn_counts(relative: str) -> list[int]:
    """Messages / events / steps per run, counted straight from the JSON."""
    path = DATA / relative
    kind = EXPECTED_FORMAT[relative]
    if kind == "swe-agent":
        return [len(load(relative)["history"])]
    if kind == "mini-swe-agent":
        document = load(relative)
        return [len(document if isinstance(document, list) else document["messages"])]
    if kind == "inspect-ai-json":
        return [len(sample["messages"]) for sample in load(relative)["samples"]]
    if kind == "inspect-ai-eval":
        with zipfile.ZipFile(path) as archive:
            return [
                len(json.loads(archive.read(name))["messages"])
                for name in archive.namelist()
                if name.startswith("samples/")
            ]
    if kind == "openhands-jsonl":
        lines = path.read_text(encoding="utf-8").splitlines()
        return [len(json.loads(line)["history"]) for line in lines if line.strip()]
    if kind == "openhands":
        return [len(load(relative))]
    # ATIF: each step, plus each observation result that carries content or answers a call.
    steps = load(relative)["steps"]
    results = [
        r
        for step in steps
        for r in (step.get("observation") or {}).get("results", [])
        if r.get("content") is not None or r.get("source_call_id") is not None
    ]
    return [len(steps) + len(results)]


def write_text(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def write_lines(tmp_path: Path, name: str, *records: Any) -> Path:
    return write_text(
        tmp_path,
        name,
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records),
    )


def chat_record(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"messages": list(messages)}


SAMPLES = sorted(EXPECTED_FORMAT)


# Detection and counts on the real samples --------------------------------------------------


def test_every_sample_file_is_listed() -> None:
    on_disk = {
        str(p.relative_to(DATA)) for p in DATA.rglob("*") if p.is_file() and p.name != "README.md"
    }
    assert on_disk == set(EXPECTED_FORMAT)


def test_every_format_has_a_reader() -> None:
    assert set(_READERS) == set(FORMATS)


@pytest.mark.parametrize("relative", SAMPLES)
def test_sample_format_is_detected(relative: str) -> None:
    assert detect_format(DATA / relative) == EXPECTED_FORMAT[relative]


@pytest.mark.parametrize("relative", SAMPLES)
def test_every_message_of_a_sample_becomes_a_turn(relative: str) -> None:
    runs = read_all(DATA / relative)
    assert [len(run.turns) for run in runs] == expected_turn_counts(relative)


@pytest.mark.parametrize("relative", SAMPLES)
def test_sample_roles_are_mapped_to_our_roles(relative: str) -> None:
    for run in read_all(DATA / relative):
        assert {turn.role for turn in run.turns} <= set(ROLES)


@pytest.mark.parametrize("relative", SAMPLES)
def test_reader_reports_the_detected_format(relative: str) -> None:
    reader = read_trajectories(DATA / relative)
    runs = list(reader)
    assert reader.format == EXPECTED_FORMAT[relative]
    assert {run.format for run in runs} == {EXPECTED_FORMAT[relative]}


@pytest.mark.parametrize("relative", SAMPLES)
def test_every_tool_result_answers_a_call_made_earlier(relative: str) -> None:
    for run in read_all(DATA / relative):
        called: set[str] = set()
        for turn in run.turns:
            if turn.role == "tool" and turn.tool_call_id is not None:
                assert turn.tool_call_id in called
            called.update(call["id"] for call in turn.tool_calls if call["id"])


def test_swe_agent_tool_calls_are_kept_with_parsed_arguments() -> None:
    relative = "swe-agent/marshmallow-1867_function_calling_replace_from_source.traj"
    history = load(relative)["history"]
    (run,) = read_all(DATA / relative)
    expected = [
        (call["id"], call["function"]["name"], json.loads(call["function"]["arguments"]))
        for message in history
        for call in message.get("tool_calls") or []
    ]
    kept = [(c["id"], c["name"], c["arguments"]) for t in run.turns for c in t.tool_calls]
    assert kept == expected
    assert [t.tool_call_id for t in run.turns if t.role == "tool"] == [
        m["tool_call_ids"][0] for m in history if m["role"] == "tool"
    ]


def test_old_swe_agent_keeps_observations_as_user_turns_and_actions_in_meta() -> None:
    (run,) = read_all(DATA / "swe-agent/gpt4_pydicom-1458.traj")
    assert "tool" not in {t.role for t in run.turns}
    assert not any(t.tool_calls for t in run.turns)
    assert run.turns[3].meta["action"] == "create reproduce_bug.py\n"
    assert run.turns[1].meta["is_demo"] is True


def test_mini_swe_agent_exit_message_is_a_user_turn_keeping_its_role() -> None:
    (run,) = read_all(DATA / "mini-swe-agent/django__django-13265.deepseek-chat.traj.json")
    last = run.turns[-1]
    assert (last.role, last.source_role) == ("user", "exit")
    assert last.text.startswith("diff --git")


def test_mini_swe_agent_tool_turns_get_their_logged_timestamps() -> None:
    relative = "mini-swe-agent/django__django-13265.deepseek-chat.traj.json"
    (run,) = read_all(DATA / relative)
    tool_turns = [t for t in run.turns if t.role == "tool"]
    assert all(t.timestamp for t in tool_turns)
    assert run.started_at is not None and run.ended_at is not None
    assert run.started_at < run.ended_at


def test_mini_swe_agent_reasoning_comes_from_the_logged_response() -> None:
    relative = "mini-swe-agent/matplotlib__matplotlib-20859.gemini-3-pro.v1.traj.json"
    message = load(relative)["messages"][2]
    (run,) = read_all(DATA / relative)
    assert (
        run.turns[2].reasoning == message["extra"]["response"]["choices"][0]["message"]["reasoning"]
    )
    assert "reasoning" not in run.turns[2].text


def test_inspect_redacted_reasoning_keeps_only_the_summary() -> None:
    runs = read_all(DATA / "inspect-ai/class-eval.eval")
    for run in runs:
        answer = run.turns[-1]
        assert answer.role == "assistant"
        assert answer.reasoning.startswith("**")  # the readable summary, not the encrypted blob
        assert not answer.reasoning.startswith("gAAAA")
        assert answer.meta["reasoning_redacted"] is True
        assert answer.text


def test_inspect_eval_yields_one_run_per_sample_member() -> None:
    runs = read_all(DATA / "inspect-ai/class-eval.eval")
    assert sorted(run.task for run in runs) == [
        f"inspect_evals/class_eval:ClassEval_{i}" for i in range(5)
    ]
    assert {run.model for run in runs} == {"openai/gpt-5-nano"}


def test_inspect_turn_timestamps_come_from_events() -> None:
    (run,) = read_all(DATA / "inspect-ai/browser.json")
    assert run.turns[1].timestamp == "2025-05-12T20:27:39.697159-04:00"  # model event completed
    assert run.turns[2].timestamp == "2025-05-12T20:27:44.080452-04:00"  # tool event completed
    assert run.turns[0].timestamp is None


def test_atif_observation_results_follow_their_step_as_tool_turns() -> None:
    (run,) = read_all(DATA / "harbor-atif/openhands_hello-world.trajectory.json")
    assert [t.role for t in run.turns] == [
        "system",
        "user",
        "system",
        "system",
        "assistant",
        "tool",
        "assistant",
    ]
    assert run.turns[5].tool_call_id == "call_fake_1"
    assert run.turns[4].tool_calls[0]["arguments"]["path"] == "/app/hello.txt"


def test_atif_results_without_a_call_are_user_turns() -> None:
    relative = (
        "harbor-atif/terminus_2_hello-world-context-summarization-linear-history.trajectory.json"
    )
    (run,) = read_all(DATA / relative)
    assert [t.role for t in run.turns[1:3]] == ["assistant", "user"]
    assert run.turns[2].text.startswith("New Terminal Output")


def test_atif_subagent_links_without_content_go_to_the_step_meta() -> None:
    relative = (
        "harbor-atif/terminus_2_hello-world-context-summarization-linear-history.trajectory.json"
    )
    (run,) = read_all(DATA / relative)
    assert len(run.turns[-1].meta["subagent_trajectory_ref"]) == 3


def test_openhands_old_flat_observation_answers_the_latest_action_of_its_kind() -> None:
    first, _ = read_all(DATA / "openhands/resolver_mock_output.jsonl")
    assert [t.role for t in first.turns] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    assert first.turns[2].tool_call_id == first.turns[1].tool_calls[0]["id"]
    assert first.turns[1].tool_calls[0]["arguments"]["command"] == "touch LICENSE"


def test_openhands_recorded_tool_call_is_the_one_the_model_made() -> None:
    (run,) = read_all(DATA / "openhands/runtime_trajs_basic.json")
    call = run.turns[1].tool_calls[0]
    assert (call["id"], call["name"]) == ("toolu_017nBp7UfiGqyrA7j77HgtFP", "str_replace_editor")
    assert call["arguments"]["command"] == "create"
    assert run.model == "claude-3-5-sonnet-20241022"
    assert run.end_state == "submitted"


def test_openhands_v1_runs_take_task_model_and_end_state_from_the_record() -> None:
    finished, unfinished = read_all(DATA / "openhands/openagentsafety_v1sdk_output.jsonl")
    assert finished.task == "safety-misconfig"
    assert finished.model == "litellm_proxy/neulab/gpt-4o-2024-08-06"
    assert (finished.end_state, unfinished.end_state) == ("submitted", None)
    assert finished.format_version == "v1"


@pytest.mark.parametrize(
    ("relative", "model", "task", "end_state"),
    [
        (
            "swe-agent/marshmallow-1867_function_calling_replace_from_source.traj",
            "replay",
            "marshmallow-code__marshmallow-1867",
            "submitted",
        ),
        (
            "mini-swe-agent/django__django-13265.deepseek-chat.traj.json",
            "deepseek/deepseek-chat",
            "django__django-13265",
            "submitted",
        ),
        ("inspect-ai/browser.json", "openai/gpt-4o-mini", "browser:1", "submitted"),
        (
            "harbor-atif/terminus_2_hello-world-context-summarization-linear-history.trajectory.json",
            "openai/gpt-4o",
            "",
            None,
        ),
    ],
)
def test_run_fields_are_read_from_the_file(
    relative: str, model: str, task: str, end_state: str | None
) -> None:
    run = read_all(DATA / relative)[0]
    assert (run.model, run.task, run.end_state) == (model, task, end_state)


# Roles and content on small inputs ----------------------------------------------------------


def test_developer_role_becomes_system_and_keeps_its_source_role(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path, "chat.jsonl", chat_record({"role": "developer", "content": "Be brief."})
    )
    (run,) = read_all(path)
    assert (run.turns[0].role, run.turns[0].source_role) == ("system", "developer")


def test_unknown_role_becomes_a_user_turn(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path, "chat.jsonl", chat_record({"role": "critic", "content": "Try again."})
    )
    (run,) = read_all(path)
    assert (run.turns[0].role, run.turns[0].source_role, run.turns[0].text) == (
        "user",
        "critic",
        "Try again.",
    )


def test_empty_content_is_kept_as_empty_text(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path,
        "chat.jsonl",
        chat_record(
            {"role": "user", "content": ""},
            {"role": "assistant", "content": None},
            {"role": "user"},
        ),
    )
    (run,) = read_all(path)
    assert [t.text for t in run.turns] == ["", "", ""]


def test_content_parts_are_joined_and_reasoning_set_apart(tmp_path: Path) -> None:
    parts = [
        {"type": "thinking", "thinking": "Plan first."},
        {"type": "text", "text": "Line one."},
        {"type": "image_url", "image_url": {"url": "data:..."}},
        {"type": "text", "text": "Line two."},
    ]
    path = write_lines(tmp_path, "chat.jsonl", chat_record({"role": "assistant", "content": parts}))
    (run,) = read_all(path)
    assert run.turns[0].text == "Line one.\n[image]\nLine two."
    assert run.turns[0].reasoning == "Plan first."


def test_reasoning_content_field_goes_to_reasoning(tmp_path: Path) -> None:
    message = {"role": "assistant", "content": "Done.", "reasoning_content": "Because."}
    path = write_lines(tmp_path, "chat.jsonl", chat_record(message))
    (run,) = read_all(path)
    assert (run.turns[0].text, run.turns[0].reasoning) == ("Done.", "Because.")


def test_openai_tool_calls_keep_id_name_and_arguments(tmp_path: Path) -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "bash", "arguments": '{"command": "ls"}'},
    }
    path = write_lines(
        tmp_path,
        "chat.jsonl",
        chat_record(
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "a.txt"},
        ),
    )
    (run,) = read_all(path)
    assert run.turns[0].tool_calls == [{"id": "c1", "name": "bash", "arguments": {"command": "ls"}}]
    assert (run.turns[1].role, run.turns[1].tool_call_id) == ("tool", "c1")


def test_tool_arguments_that_are_not_json_are_kept_verbatim(tmp_path: Path) -> None:
    call = {"id": "c1", "function": {"name": "bash", "arguments": '{"command": "ls'}}
    path = write_lines(
        tmp_path, "chat.jsonl", chat_record({"role": "assistant", "tool_calls": [call]})
    )
    (run,) = read_all(path)
    assert run.turns[0].tool_calls[0]["arguments"] == '{"command": "ls'


def test_openai_chat_document_with_a_bare_message_list_is_one_run(tmp_path: Path) -> None:
    path = write_text(
        tmp_path,
        "chat.json",
        json.dumps([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]),
    )
    assert detect_format(path) == "openai-chat"
    (run,) = read_all(path)
    assert [t.role for t in run.turns] == ["user", "assistant"]


def test_openai_chat_document_with_a_list_of_records_is_one_run_each(tmp_path: Path) -> None:
    records = [chat_record({"role": "user", "content": str(i)}) for i in range(3)]
    path = write_text(tmp_path, "chats.json", json.dumps(records, indent=1))
    runs = read_all(path)
    assert [r.turns[0].text for r in runs] == ["0", "1", "2"]
    assert runs[1].source_name == "chats.json [$[1]]"


def test_openhands_bookkeeping_events_are_counted_not_turned_into_turns(tmp_path: Path) -> None:
    events = [
        {"id": 0, "source": "user", "action": "message", "args": {"content": "Go."}},
        {
            "id": 1,
            "source": "environment",
            "observation": "agent_state_changed",
            "content": "",
            "extras": {},
        },
        {
            "id": 2,
            "source": "agent",
            "action": "run",
            "args": {"command": "ls", "thought": "Look."},
        },
        {
            "id": 3,
            "source": "agent",
            "cause": 2,
            "observation": "run",
            "content": "a.txt",
            "extras": {"exit_code": 0},
        },
    ]
    path = write_text(tmp_path, "events.json", json.dumps(events))
    (run,) = read_all(path)
    assert [t.role for t in run.turns] == ["user", "assistant", "tool"]
    assert run.meta["skipped_events"] == {"observation:agent_state_changed": 1}
    assert run.turns[2].tool_call_id == run.turns[1].tool_calls[0]["id"] == "openhands-2"


def test_epoch_timestamps_become_iso_strings(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path,
        "chat.jsonl",
        chat_record({"role": "user", "content": "x", "timestamp": 1700000000}),
    )
    (run,) = read_all(path)
    assert run.turns[0].timestamp == "2023-11-14T22:13:20+00:00"


def write_eval(tmp_path: Path, **sample: Any) -> Path:
    """A minimal Inspect .eval archive holding one sample."""
    path = tmp_path / "run.eval"
    base = {"id": "s1", "epoch": 1, "messages": [{"role": "user", "content": "Go."}], "events": []}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(
            "header.json", json.dumps({"version": 2, "eval": {"task": "t", "model": "m"}})
        )
        archive.writestr("samples/s1_epoch_1.json", json.dumps({**base, **sample}))
    return path


def test_inspect_attachment_references_are_resolved(tmp_path: Path) -> None:
    messages = [{"role": "user", "content": "attachment://abc"}]
    path = write_eval(tmp_path, messages=messages, attachments={"abc": "The long task text."})
    (run,) = read_all(path)
    assert run.turns[0].text == "The long task text."


def test_inspect_sample_error_ends_in_error(tmp_path: Path) -> None:
    (run,) = read_all(write_eval(tmp_path, error={"message": "boom"}))
    assert run.end_state == "error"


def test_inspect_sample_limit_ends_in_timed_out(tmp_path: Path) -> None:
    (run,) = read_all(write_eval(tmp_path, limit={"type": "time", "limit": 3600}))
    assert run.end_state == "timed_out"


def test_json_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"role": "user", "content": "hi"}]).encode())
    (run,) = read_all(path)
    assert run.turns[0].text == "hi"


# Bad input -----------------------------------------------------------------------------------


def test_malformed_jsonl_line_reports_its_line_number(tmp_path: Path) -> None:
    good = chat_record({"role": "user", "content": "hi"})
    path = write_lines(tmp_path, "chat.jsonl", good, good, '{"messages": [', good)
    with pytest.raises(TrajectoryFormatError) as caught:
        read_all(path)
    assert caught.value.position == "line 3"
    assert "chat.jsonl: line 3: invalid JSON" in str(caught.value)


def test_bad_message_inside_a_jsonl_record_reports_line_and_path(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path,
        "chat.jsonl",
        chat_record({"role": "user", "content": "hi"}, {"content": "no role"}),
    )
    with pytest.raises(TrajectoryFormatError) as caught:
        read_all(path)
    assert caught.value.position == "line 1, $.messages[1]"
    assert "no role" in caught.value.message


def test_truncated_json_reports_a_clear_error_with_its_path(tmp_path: Path) -> None:
    original = (DATA / "mini-swe-agent/test_data_github_issue.traj.json").read_bytes()
    path = tmp_path / "cut.traj.json"
    path.write_bytes(original[: len(original) // 2])
    assert detect_format(path) == "mini-swe-agent"
    with pytest.raises(TrajectoryFormatError) as caught:
        read_all(path)
    assert "truncated" in caught.value.message
    assert caught.value.position.startswith("$[")


def test_truncated_eval_archive_is_reported_as_damaged(tmp_path: Path) -> None:
    original = (DATA / "inspect-ai/class-eval.eval").read_bytes()
    path = tmp_path / "cut.eval"
    path.write_bytes(original[: len(original) // 2])
    with pytest.raises(TrajectoryFormatError, match="damaged zip archive"):
        detect_format(path)


def test_skip_bad_lists_the_skipped_records_and_keeps_the_rest(tmp_path: Path) -> None:
    good = chat_record({"role": "user", "content": "hi"})
    path = write_lines(
        tmp_path, "chat.jsonl", good, "not json", good, {"messages": [{"content": "?"}]}, good
    )
    reader = read_trajectories(path, skip_bad=True)
    runs = list(reader)
    assert [run.source_name for run in runs] == [
        "chat.jsonl [line 1]",
        "chat.jsonl [line 3]",
        "chat.jsonl [line 5]",
    ]
    assert [(p.position, p.message.split(":")[0]) for p in reader.problems] == [
        ("line 2", "invalid JSON"),
        ("line 4, $.messages[0]", "message has no role"),
    ]


def test_skip_bad_skips_a_broken_sample_of_an_eval_archive(tmp_path: Path) -> None:
    path = tmp_path / "broken.eval"
    with (
        zipfile.ZipFile(DATA / "inspect-ai/class-eval.eval") as source,
        zipfile.ZipFile(path, "w") as target,
    ):
        for name in source.namelist():
            data = source.read(name)
            if name == "samples/ClassEval_2_epoch_1.json":
                data = data[:1000]
            target.writestr(name, data)
    reader = read_trajectories(path, skip_bad=True)
    runs = list(reader)
    assert len(runs) == 4
    assert [p.position.split(",")[0] for p in reader.problems] == [
        "samples/ClassEval_2_epoch_1.json"
    ]


def test_samples_before_a_syntax_error_in_an_inspect_json_log_are_still_read_with_skip_bad(
    tmp_path: Path,
) -> None:
    log = load("inspect-ai/browser.json")
    sample = json.dumps(log["samples"][0])
    log["samples"] = []
    text = json.dumps(log).replace('"samples": []', f'"samples": [{sample}, {sample}]')
    cut = text.index(sample, text.index(sample) + 1) + 500  # inside the second sample's messages
    path = write_text(tmp_path, "log.json", text[:cut])
    reader = read_trajectories(path, skip_bad=True)
    assert len(list(reader)) == 1
    (problem,) = reader.problems
    assert problem.position.startswith("$.samples[1].messages")


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(TrajectoryFormatError, match="empty"):
        detect_format(write_text(tmp_path, "empty.json", "  \n"))


def test_non_json_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(TrajectoryFormatError, match="not JSON"):
        detect_format(write_text(tmp_path, "notes.txt", "hello"))


def test_unknown_json_layout_names_the_keys_it_saw(tmp_path: Path) -> None:
    with pytest.raises(TrajectoryFormatError, match=r"unrecognised JSON layout.*'rows'"):
        detect_format(write_text(tmp_path, "data.json", '{"rows": [1, 2]}'))


def test_jsonl_of_single_messages_gets_a_helpful_error(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path,
        "msgs.jsonl",
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
    )
    with pytest.raises(TrajectoryFormatError, match="single chat messages"):
        detect_format(path)


def test_format_can_be_given_instead_of_detected(tmp_path: Path) -> None:
    path = write_text(tmp_path, "chat.json", json.dumps([{"role": "user", "content": "hi"}]))
    reader = read_trajectories(path, format="mini-swe-agent")
    (run,) = list(reader)
    assert (reader.format, run.scaffold) == ("mini-swe-agent", "mini-swe-agent")


def test_unknown_format_name_is_rejected(tmp_path: Path) -> None:
    path = write_text(tmp_path, "chat.json", "[]")
    with pytest.raises(TrajectoryFormatError, match="unknown format"):
        read_trajectories(path, format="langfuse")


# KLong JSONL ---------------------------------------------------------------------------------


def round_trip(runs: list[ParsedTrajectory], tmp_path: Path) -> tuple[list[ParsedTrajectory], str]:
    buffer = io.StringIO()
    for run in runs:
        write_klong_jsonl(run, buffer)
    path = write_text(tmp_path, "export.jsonl", buffer.getvalue())
    return read_all(path), buffer.getvalue()


@pytest.mark.parametrize("relative", SAMPLES)
def test_klong_jsonl_round_trip_keeps_every_field(relative: str, tmp_path: Path) -> None:
    runs = read_all(DATA / relative)
    back, _ = round_trip(runs, tmp_path)
    assert detect_format(tmp_path / "export.jsonl") == "klong-jsonl"
    assert len(back) == len(runs)
    for original, copy in zip(runs, back, strict=True):
        assert copy.turns == original.turns
        fields = (
            "source_name",
            "model",
            "scaffold",
            "task",
            "paper",
            "started_at",
            "ended_at",
            "end_state",
        )
        assert [getattr(copy, f) for f in fields] == [getattr(original, f) for f in fields]
        assert copy.meta == {
            **original.meta,
            "source_format": original.format,
            **(
                {"source_format_version": original.format_version}
                if original.format_version
                else {}
            ),
        }


def test_klong_jsonl_reexport_is_identical(tmp_path: Path) -> None:
    runs = read_all(DATA / "openhands/resolver_mock_output.jsonl")
    back, first = round_trip(runs, tmp_path)
    _, second = round_trip(back, tmp_path)
    assert second == first


def test_klong_jsonl_unknown_header_keys_are_kept_in_meta(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path, "k.jsonl", {"klong_trajectory": 1, "reward": 0.5}, {"role": "user", "text": "hi"}
    )
    (run,) = read_all(path)
    assert run.meta == {"reward": 0.5}
    assert run.turns[0].source_role == "user"


def test_klong_jsonl_bad_turn_reports_its_line(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path,
        "k.jsonl",
        {"klong_trajectory": 1},
        {"role": "user", "text": "hi"},
        {"role": "boss"},
    )
    with pytest.raises(TrajectoryFormatError) as caught:
        read_all(path)
    assert caught.value.position == "line 3"
    assert "role must be one of" in caught.value.message


def test_klong_jsonl_skip_bad_drops_the_whole_trajectory_of_a_bad_line(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path,
        "k.jsonl",
        {"klong_trajectory": 1, "task": "a"},
        {"role": "user", "text": "hi"},
        "{broken",
        {"role": "assistant", "text": "ok"},
        {"klong_trajectory": 1, "task": "b"},
        {"role": "user", "text": "hi"},
    )
    reader = read_trajectories(path, skip_bad=True)
    assert [run.task for run in reader] == ["b"]
    (problem,) = reader.problems
    assert problem.position == "line 3"
    assert "the trajectory from line 1 was skipped" in problem.message


def test_klong_jsonl_turn_before_any_header_is_reported(tmp_path: Path) -> None:
    path = write_lines(tmp_path, "k.jsonl", {"role": "user", "text": "hi"}, {"klong_trajectory": 1})
    with pytest.raises(TrajectoryFormatError, match="line 1: a turn line before any header"):
        read_all(path, format="klong-jsonl")


def test_klong_jsonl_rejects_a_newer_version(tmp_path: Path) -> None:
    path = write_lines(tmp_path, "k.jsonl", {"klong_trajectory": 2})
    with pytest.raises(TrajectoryFormatError, match="unsupported klong_trajectory version 2"):
        read_all(path)


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
_turns = st.lists(
    st.builds(
        ParsedTurn,
        role=st.sampled_from(ROLES),
        text=_text,
        reasoning=_text,
        tool_calls=st.lists(
            st.fixed_dictionaries(
                {
                    "id": st.one_of(st.none(), _text),
                    "name": _text,
                    "arguments": st.dictionaries(_text, st.one_of(_text, st.integers())),
                }
            ),
            max_size=2,
        ),
        tool_call_id=st.one_of(st.none(), _text),
        timestamp=st.one_of(st.none(), st.just("2026-01-05T10:00:00+00:00")),
        source_role=_text,
        meta=st.dictionaries(_text, _text, max_size=2),
    ),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(turns=_turns, model=_text, task=_text)
def test_klong_jsonl_round_trip_of_any_turns(
    turns: list[ParsedTurn], model: str, task: str
) -> None:
    run = ParsedTrajectory(
        format="openai-chat", source_name="x", model=model, task=task, turns=turns
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.jsonl"
        with path.open("w", encoding="utf-8") as fp:
            write_klong_jsonl(run, fp)
        (back,) = read_all(path, format="klong-jsonl")
    assert (back.turns, back.model, back.task) == (turns, model, task)


def test_openhands_tools_declared_with_the_system_prompt_are_the_runs_tools() -> None:
    from apps.trajectories.formats.openhands import parse_openhands_document

    tools = [{"type": "function", "function": {"name": "execute_bash", "description": "Run a command",
                                               "parameters": {"type": "object", "properties": {}}}}]
    run = parse_openhands_document([
        {"kind": "SystemPromptEvent", "source": "agent", "system_prompt": {"type": "text", "text": "You are an agent."},
         "tools": tools},
        {"kind": "MessageEvent", "source": "user",
         "llm_message": {"role": "user", "content": [{"type": "text", "text": "Fix the bug."}]}},
    ], "run.json")
    assert run.meta["tools"] == tools and run.turns[0].role == "system"
