"""Rollout driver processes: the pool's sessions in other Python processes, for real (bubblewrap
sandboxes, the tiny policy served on loopback, the test database shared with the drivers)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from apps.trajectories.models import Trajectory
from tests.training.test_rl_pool import batch_while
from worker.training.rl import LocalPolicy, Task, rollout_seed
from worker.training.rl_agent import AgentRunner, PaperTask
from worker.training.rl_drivers import DriverError, DriverGroup
from worker.training.rl_policy_server import PolicyServer
from worker.training.rl_pool import RolloutPool, RolloutStates
from worker.training.rl_serving import RemotePolicy, ServerConfig
from worker.training.tiny import build_tiny_model


def three_steps(messages: list[dict]) -> str:
    """Three tool calls of 0.3 s each, then submit: rollouts long enough to be interrupted."""
    done = sum(1 for m in messages if m.get("role") == "tool")
    call = ({"name": "bash", "arguments": {"cmd": f"sleep 0.3; echo step {done} >> log.txt"}} if done < 3
            else {"name": "submit", "arguments": {"end_message": "log.txt"}})
    return f"<tool_call>{json.dumps(call)}</tool_call>"


class WhereRunner(AgentRunner):
    """Notes the process each rollout ran in; refuses to run in the job's own process."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.job_pid = os.getpid()

    def run(self, task, index, timeout_s, policy, seed):
        if os.getpid() == self.job_pid:
            raise AssertionError("a session ran in the job's process")
        rollout = super().run(task, index, timeout_s, policy, seed)
        rollout.meta["pid"] = os.getpid()
        return rollout


def make_pool(tmp_path, server, runner, n: int, processes: int, states: RolloutStates) -> RolloutPool:
    policy = RemotePolicy(ServerConfig(base_url=server.base_url, model="policy"), tmp_path / "served")
    task = Task("driven-paper", PaperTask(0, "driven-paper", "# A paper\n\nReproduce it."))
    drivers = DriverGroup(processes, n, [task], runner, policy, states)
    return RolloutPool([task], runner, policy, n_rollouts=n, timeout_s=120.0,
                       seed_for=lambda b, t, j: rollout_seed(0, b, t, j), concurrency=n, states=states,
                       is_failure=lambda r: r.end_state == "error", drivers=drivers)


@pytest.mark.django_db(transaction=True)
def test_sessions_run_in_driver_processes_and_a_killed_driver_fails_only_its_rollouts(tmp_path, settings):
    settings.KLONG_SANDBOXES_PER_HOST = 0  # the driver processes get this setting too
    folder = build_tiny_model(tmp_path / "policy")
    runner = WhereRunner(Path(settings.DATA_DIR), sandbox_backend="bwrap", max_steps=6, l_max=2048)
    states = RolloutStates(8)
    with PolicyServer(folder, script=three_steps, latency_s=0.1, batch_window_s=0.02) as server:
        pool = make_pool(tmp_path, server, runner, 8, 2, states)
        victim = pool.drivers.pids[0]

        def kill_when_busy() -> None:
            deadline = time.monotonic() + 60
            while states.snapshot()["on_tools"] + states.snapshot()["on_model"] < 8 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(victim, signal.SIGKILL)  # mid-rollout: out of memory, a node lost

        rollouts = batch_while(pool, kill_when_busy)

    per_driver = pool.drivers.sessions_per_driver()
    assert sorted(per_driver.values()) == [4, 4]  # spread evenly over the two
    assert len(rollouts) == 4 and {r.meta["pid"] for r in rollouts} == set(per_driver) - {victim}
    assert len(pool.failed) == 4 and all(f"driver process ({victim})" in why for _, _, why in pool.failed)
    assert states.snapshot()["done"] == 4 and states.snapshot()["failed"] == 4
    assert states.peak == 8  # the states the drivers reported reached the job's counts
    for rollout in rollouts:  # recorded turn by turn by the drivers, in the test's database
        trajectory = Trajectory.objects.get(pk=rollout.meta["trajectory"])
        assert trajectory.end_state == "submitted" and trajectory.turn_count == 10
        assert [t.role for t in trajectory.turns.order_by("index")][2:4] == ["assistant", "tool"]
        assert rollout.turns[2].token_ids and rollout.states[-1]
    # the killed driver's trajectories keep their turns and end as errors, not "running" forever
    assert Trajectory.objects.filter(source="rollout").count() == 8
    lost = Trajectory.objects.filter(source="rollout").exclude(pk__in=[r.meta["trajectory"] for r in rollouts])
    assert lost.count() == 4 and not lost.filter(live=True).exists()
    assert [(t.end_state, f"({victim}) exited" in t.meta["error"]) for t in lost] == [("error", True)] * 4, [(t.end_state, t.meta, t.turn_count) for t in lost]


@pytest.mark.django_db(transaction=True)
def test_a_weight_swap_waits_for_the_drivers_calls_and_their_next_turns_record_the_new_version(tmp_path, settings):
    import torch
    from transformers import AutoModelForCausalLM

    settings.KLONG_SANDBOXES_PER_HOST = 0
    folder = build_tiny_model(tmp_path / "policy")
    runner = AgentRunner(Path(settings.DATA_DIR), sandbox_backend="bwrap", max_steps=6, l_max=2048)
    states = RolloutStates(4)
    trainer = AutoModelForCausalLM.from_pretrained(folder)
    with PolicyServer(folder, script=three_steps, latency_s=0.2, batch_window_s=0.02) as server:
        pool = make_pool(tmp_path, server, runner, 4, 2, states)
        policy = pool.policy
        published: list[float] = []

        def publish_mid_run() -> None:
            deadline = time.monotonic() + 60
            while sum(server.batch_sizes) < 6 and time.monotonic() < deadline:  # each session a call or two in
                time.sleep(0.01)
            with torch.no_grad():
                for p in trainer.parameters():
                    p.add_(0.1)
            policy.publish(trainer, 1)  # the sessions in the drivers are between turns
            published.append(time.monotonic())

        rollouts = batch_while(pool, publish_mid_run)
    assert server.version == 1 and policy.version == 1 and len(rollouts) == 4
    # every rollout spans the swap: its first turns from v0, the ones after from v1, told apart
    assert all([v for _, v in r.segments] == [0, 1] for r in rollouts)
    for rollout in rollouts:
        turns = Trajectory.objects.get(pk=rollout.meta["trajectory"]).turns.filter(role="assistant").order_by("index")
        versions = [t.meta["policy_version"] for t in turns]
        assert versions == sorted(versions) and versions[0] == 0 and versions[-1] == 1
    assert not policy.gate.peers  # the closed group no longer holds the job's swaps


def test_only_a_served_policy_can_be_shared_with_driver_processes(tmp_path):
    import torch

    served = RemotePolicy(ServerConfig(base_url="http://127.0.0.1:1/v1", model="policy"), tmp_path)
    with pytest.raises(DriverError, match="served policy"):  # generating in this process's memory
        DriverGroup(2, 4, [], AgentRunner(tmp_path), LocalPolicy(torch.nn.Linear(2, 2), None, 0))
    with pytest.raises(DriverError, match="at least 1"):
        DriverGroup(0, 4, [], AgentRunner(tmp_path), served)
    with pytest.raises(DriverError, match="cannot be sent"):  # a task a driver could never receive
        DriverGroup(1, 4, [Task("t", lambda: None)], AgentRunner(tmp_path), served)
