from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from apps.papers.models import Paper
from apps.trajectories.models import Trajectory, Turn
from apps.trajectories.services import TrajectoryImportError, import_trajectories
from apps.trajectories.tokens import counter_for
from tests.trajectories.factories import SAMPLES, klong_jsonl, tiny_tokenizer

pytestmark = pytest.mark.django_db

# Every real sample: (path under shared/data/trajectories, detected format, turns per run).
REAL_SAMPLES = [
    ("harbor-atif/openhands_hello-world.trajectory.json", "harbor-atif", [7]),
    ("harbor-atif/terminus_2_hello-world-context-summarization-linear-history.trajectory.json", "harbor-atif", [8]),
    ("inspect-ai/browser.json", "inspect-ai-json", [10]),
    ("inspect-ai/class-eval.eval", "inspect-ai-eval", [3, 3, 3, 3, 3]),
    ("mini-swe-agent/django__django-13265.deepseek-chat.traj.json", "mini-swe-agent", [314]),
    ("mini-swe-agent/matplotlib__matplotlib-20859.gemini-3-pro.v1.traj.json", "mini-swe-agent", [74]),
    ("mini-swe-agent/test_data_github_issue.traj.json", "mini-swe-agent", [22]),
    ("openhands/openagentsafety_v1sdk_output.jsonl", "openhands-jsonl", [18, 18]),
    ("openhands/resolver_mock_output.jsonl", "openhands-jsonl", [8, 44]),
    ("openhands/runtime_trajs_basic.json", "openhands", [4]),
    ("swe-agent/gpt4_pydicom-1458.traj", "swe-agent", [26]),
    ("swe-agent/humanevalfix-python-0.traj", "swe-agent", [11]),
    ("swe-agent/marshmallow-1867_function_calling_replace_from_source.traj", "swe-agent", [28]),
]

TURNS = [
    {"role": "system", "text": "You are an agent."},
    {"role": "user", "text": "Reproduce the paper."},
    {"role": "assistant", "text": "", "tool_calls": [{"id": "1", "name": "bash", "arguments": {"cmd": "ls"}}]},
    {"role": "tool", "text": "paper.md", "tool_call_id": "1"},
]


@pytest.mark.parametrize(("name", "fmt", "turns"), REAL_SAMPLES, ids=[s[0] for s in REAL_SAMPLES])
def test_every_real_sample_imports_with_its_format_and_turn_counts(name, fmt, turns):
    result = import_trajectories(SAMPLES / name)
    assert [t.format for t in result.trajectories] == [fmt] * len(turns)
    assert [t.turns for t in result.trajectories] == turns
    rows = Trajectory.objects.filter(pk__in=[t.id for t in result.trajectories]).order_by("pk")
    assert [r.source_format for r in rows] == [fmt] * len(turns)
    assert [r.turns.count() for r in rows] == turns
    assert [r.turn_count for r in rows] == turns


def test_the_sample_folder_imports_through_the_command(capsys):
    call_command("import_trajectories", str(SAMPLES))
    out = capsys.readouterr().out
    assert Trajectory.objects.count() == sum(len(s[2]) for s in REAL_SAMPLES)
    assert Turn.objects.count() == sum(sum(s[2]) for s in REAL_SAMPLES)
    first = Trajectory.objects.order_by("pk").first()
    # Per trajectory: the detected format, the new id and the number of turns.
    assert f"harbor-atif\tid {first.pk}\t7 turns" in out


def test_the_command_links_trajectories_to_the_paper(tmp_path, capsys):
    paper = Paper.objects.create(slug="bam", title="BAM")
    call_command("import_trajectories", str(klong_jsonl(tmp_path / "run.jsonl", [TURNS])), "--paper", "bam")
    assert Trajectory.objects.get().paper == paper


def test_the_command_fails_with_the_position_and_imports_nothing(tmp_path):
    path = klong_jsonl(tmp_path / "runs.jsonl", [TURNS, TURNS], bad_line=8)
    with pytest.raises(CommandError, match="line 8"):
        call_command("import_trajectories", str(path))
    assert Trajectory.objects.count() == 0


def test_a_bad_record_fails_the_whole_import_atomically(tmp_path):
    # The first run is good and would be saved first: atomic means it is rolled back too.
    path = klong_jsonl(tmp_path / "runs.jsonl", [TURNS, TURNS], bad_line=9)
    with pytest.raises(TrajectoryImportError) as error:
        import_trajectories(path)
    assert error.value.position == "line 9" and error.value.source == "runs.jsonl"
    assert Trajectory.objects.count() == 0 and Turn.objects.count() == 0


def test_a_bad_file_in_a_folder_undoes_the_good_files(tmp_path):
    klong_jsonl(tmp_path / "a.jsonl", [TURNS])
    (tmp_path / "b.json").write_text("this is not json")
    with pytest.raises(TrajectoryImportError, match="b.json"):
        import_trajectories(tmp_path)
    assert Trajectory.objects.count() == 0


def test_skip_bad_keeps_good_runs_and_lists_the_skipped_ones(tmp_path):
    path = klong_jsonl(tmp_path / "runs.jsonl", [TURNS, TURNS, TURNS], bad_line=8)
    result = import_trajectories(path, skip_bad=True)
    assert len(result.trajectories) == 2
    assert len(result.skipped) == 1 and result.skipped[0].startswith("runs.jsonl: line 8")
    assert Trajectory.objects.count() == 2


def test_turns_keep_roles_tool_calls_and_source_roles(tmp_path):
    turns = [*TURNS, {"role": "system", "source_role": "developer", "text": "be brief"}]
    result = import_trajectories(klong_jsonl(tmp_path / "r.jsonl", [turns]))
    rows = list(Turn.objects.filter(trajectory_id=result.trajectories[0].id))
    assert [t.role for t in rows] == ["system", "user", "assistant", "tool", "system"]
    assert rows[2].tool_calls == [{"id": "1", "name": "bash", "arguments": {"cmd": "ls"}}]
    assert rows[3].tool_call_id == "1" and rows[4].source_role == "developer"


def test_turns_are_written_in_batches_so_long_runs_import(tmp_path):
    turns = [{"role": "assistant" if i % 2 else "user", "text": f"step {i}"} for i in range(2500)]
    result = import_trajectories(klong_jsonl(tmp_path / "long.jsonl", [turns]))
    trajectory = Trajectory.objects.get(pk=result.trajectories[0].id)
    assert trajectory.turns.count() == 2500 and trajectory.turns.last().index == 2499


def test_token_counts_without_a_tokenizer_are_labelled_estimates(tmp_path):
    turns = [{"role": "user", "text": "x" * 400}]
    result = import_trajectories(klong_jsonl(tmp_path / "r.jsonl", [turns]))
    trajectory = Trajectory.objects.get(pk=result.trajectories[0].id)
    # chars / 4 plus 4 tokens of chat-template markers.
    assert trajectory.tokenizer == "" and trajectory.total_tokens == 104


def test_token_counts_come_from_a_configured_local_tokenizer(tmp_path, settings):
    settings.KLONG_TOKENIZER_PATH = str(tiny_tokenizer(tmp_path / "tok"))
    counter_for.cache_clear()
    result = import_trajectories(klong_jsonl(tmp_path / "r.jsonl", [TURNS]))
    trajectory = Trajectory.objects.get(pk=result.trajectories[0].id)
    assert trajectory.tokenizer == "tok"
    expected = [len(counter_for(settings.KLONG_TOKENIZER_PATH).tokenizer.encode(t.text)) + 4
                for t in trajectory.turns.exclude(role="assistant")]
    assert [t.token_count for t in trajectory.turns.exclude(role="assistant")] == expected


def test_the_paper_named_in_our_own_format_is_linked(tmp_path):
    paper = Paper.objects.create(slug="lca", title="LCA")
    path = tmp_path / "r.jsonl"
    path.write_text('{"klong_trajectory": 1, "paper": "lca"}\n{"role": "user", "text": "hi"}\n')
    result = import_trajectories(path)
    assert Trajectory.objects.get(pk=result.trajectories[0].id).paper == paper
