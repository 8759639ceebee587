"""What an agent run's recorder stores of each turn."""

from __future__ import annotations

import pytest

from apps.trajectories.queries import turn_index_data
from apps.trajectories.recorder import TrajectoryRecorder
from worker.agent import AgentTurn

pytestmark = pytest.mark.django_db


def test_an_agent_turns_tool_calls_are_stored_as_imported_ones_are_and_its_reasoning_beside_them():
    recorder = TrajectoryRecorder.start(source="distilled", model="teacher")
    call = {"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": '{"cmd": "ls"}'}}
    recorder.add_turn(AgentTurn(0, "assistant", "Listing the files.", [call], reasoning="The paper is in /home/paper."))
    (turn,) = recorder.trajectory.turns.all()
    # the shape the viewer, the windows and the exporters read: {"id", "name", "arguments"}
    assert turn.tool_calls == [{"id": "call_1", "name": "bash", "arguments": {"cmd": "ls"}}]
    assert turn.reasoning == "The paper is in /home/paper." and turn_index_data(recorder.trajectory)["calls"] == ["bash"]
