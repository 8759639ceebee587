"""A running agent's trajectory, watched in the real trajectory browser."""

from __future__ import annotations

import time

import pytest

from apps.trajectories.recorder import TrajectoryRecorder
from worker.agent import AgentResult, AgentTurn

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_trajectory_page_shows_new_turns_of_a_running_agent_and_its_end(page, live_server, personas,
                                                                             browser_login):
    recorder = TrajectoryRecorder.start(source="distilled", model="teacher", title="live run")
    now = time.time()
    for index, (role, text) in enumerate([("system", "You are an agent."), ("user", "Reproduce the paper.")]):
        recorder.add_turn(AgentTurn(index, role, text, started_at=now, ended_at=now))
    browser_login(personas["viewer"])
    page.goto(f"{live_server.url}/trajectories/{recorder.trajectory.pk}/")
    page.wait_for_selector("#live-banner")
    page.wait_for_selector("#turn-1 .turn-text")

    call = {"id": "c1", "type": "function", "function": {"name": "bash", "arguments": '{"cmd": "ls"}'}}
    recorder.add_turn(AgentTurn(2, "assistant", "Listing the files <b>now</b>", [call], started_at=now, ended_at=now))
    page.wait_for_selector("#turn-2 .turn-text", timeout=15_000)  # the page picked the new turn up
    assert "Listing the files <b>now</b>" in page.locator("#turn-2 .turn-text").inner_text()

    recorder.finish(AgentResult(turns=[], end_state="submitted", final_commit=None, steps=1, wall_s=3.0,
                                flagged=False))
    page.wait_for_selector("#live-banner", state="detached", timeout=15_000)
    assert "Submitted" in page.locator(".traj-summary").inner_text()
