"""The rollout pool: many agent sessions at once in bubblewrap sandboxes, against the tiny policy
served on loopback (batched, with token ids and log-probs)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from apps.trajectories.models import Trajectory
from worker.training.rl import Task, rollout_seed
from worker.training.rl_agent import AgentRunner, PaperTask
from worker.training.rl_policy_server import PolicyServer
from worker.training.rl_pool import RolloutPool, RolloutStates
from worker.training.rl_serving import RemotePolicy, ServerConfig
from worker.training.tiny import build_tiny_model

ROLLOUTS = 32


def scripted(messages: list[dict]) -> str:
    """Short agent replies: write the result (half a second's work in the sandbox), then submit."""
    if not any(m.get("role") == "tool" for m in messages):
        call = {"name": "bash", "arguments": {"cmd": "sleep 0.5; echo accuracy 0.91 > result.txt"}}
    else:
        call = {"name": "submit", "arguments": {"end_message": "result.txt"}}
    return f"<tool_call>{json.dumps(call)}</tool_call>"


def batch_while(pool: RolloutPool, action) -> list:
    """The pool's last batch while ``action`` runs in another thread (a kill, a weight swap)."""
    other = threading.Thread(target=action)
    other.start()
    try:
        rollouts, _ = pool.next_batch(last=True)
    finally:
        other.join()
        pool.close()
    return rollouts


@pytest.mark.django_db(transaction=True)
def test_32_concurrent_rollouts_are_recorded_turn_by_turn_and_a_killed_sandbox_fails_only_its_rollout(
        tmp_path, settings):
    settings.KLONG_SANDBOXES_PER_HOST = 0  # the pool's own cap below; no Redis slots in this test
    folder = build_tiny_model(tmp_path / "policy")
    task = Task("pool-paper", PaperTask(0, "pool-paper", "# A paper\n\nReproduce the result."))
    runner = AgentRunner(Path(settings.DATA_DIR), sandbox_backend="bwrap", max_steps=4, l_max=2048)
    killed: list[tuple[str, int]] = []

    def kill_one() -> None:
        deadline = time.monotonic() + 60
        while not runner.live and time.monotonic() < deadline:
            time.sleep(0.01)
        key, sandbox = next(iter(dict(runner.live).items()))
        killed.append(key)
        sandbox.close()  # from another thread, mid-rollout: what a dead container looks like

    # 100 ms per call, calls within 50 ms of each other batched: as an engine under load
    with PolicyServer(folder, script=scripted, latency_s=0.1, batch_window_s=0.05) as server:
        policy = RemotePolicy(ServerConfig(base_url=server.base_url, model="policy"), tmp_path / "served")
        states = RolloutStates(ROLLOUTS)
        pool = RolloutPool([task], runner, policy, n_rollouts=ROLLOUTS, timeout_s=120.0,
                           seed_for=lambda b, t, j: rollout_seed(0, b, t, j), concurrency=ROLLOUTS,
                           hosts=("host-a", "host-b"), per_host=16, states=states,
                           is_failure=lambda r: r.end_state == "error")
        rollouts = batch_while(pool, kill_one)

    assert pool.concurrency == 32  # 2 hosts x 16 sandboxes each
    assert set(pool.host_peak) == {"host-a", "host-b"} and max(pool.host_peak.values()) <= 16
    assert len(killed) == 1 and len(rollouts) == ROLLOUTS - 1
    assert [(task_id, index) for task_id, index, _ in pool.failed] == killed
    assert states.snapshot()["done"] == ROLLOUTS - 1 and states.snapshot()["failed"] == 1
    # the sessions really ran at once, and the server batched their calls
    assert states.peak >= 16 and server.max_in_flight >= 8 and max(server.batch_sizes) > 1
    trajectories = Trajectory.objects.filter(source="rollout")
    assert trajectories.count() == ROLLOUTS and not trajectories.filter(live=True).exists()
    victim = trajectories.get(meta__rollout=killed[0][1])
    assert victim.end_state == "error"
    for trajectory in trajectories.exclude(pk=victim.pk):
        turns = list(trajectory.turns.order_by("index"))
        assert [t.role for t in turns] == ["system", "user", "assistant", "tool", "assistant", "tool"]
        assert trajectory.end_state == "submitted" and trajectory.turn_count == 6
        for turn in turns[2::2]:  # each assistant turn with the ids the server sampled, and their log-probs
            assert turn.token_ids and len(turn.logprobs) == len(turn.token_ids)
            assert turn.meta["policy_version"] == 0
    assert all(r.turns[2].token_ids and r.states[-1] for r in rollouts)


def test_a_vllm_style_sleep_wake_reload_puts_each_published_version_in_service(tmp_path):
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    start = build_tiny_model(tmp_path / "start")
    served = tmp_path / "served-model"  # the folder the engine was started with: it reloads from there
    shutil.copytree(start, served)
    trainer = AutoModelForCausalLM.from_pretrained(start)
    with pytest.raises(ValueError, match="model_path"):
        ServerConfig(base_url="http://127.0.0.1:1/v1", model="policy", reload="vllm_sleep")
    with PolicyServer(served) as server:
        config = ServerConfig(base_url=server.base_url, model="policy", reload="vllm_sleep", model_path=str(served))
        policy = RemotePolicy(config, tmp_path / "unused")
        chat = policy.chat_client()
        assert chat.chat([{"role": "user", "content": "hi"}], max_tokens=4).token_ids
        with torch.no_grad():
            for p in trainer.parameters():
                p.add_(0.25)
        policy.publish(trainer, 1)
        steps = [(r["path"], r.get("level") or r.get("tags") or r.get("method")) for r in server.reloads]
        assert steps == [("/sleep", "2"), ("/wake_up", "weights"), ("/collective_rpc", "reload_weights"),
                         ("/wake_up", "kv_cache"), ("/reset_prefix_cache", None)]
        assert (server.version, policy.version) == (1, 1)
        assert all(torch.equal(mine, theirs) for mine, theirs in zip(server.model.parameters(), trainer.parameters(),
                                                                      strict=True))
        answer = chat.chat([{"role": "user", "content": "hi"}], max_tokens=4)  # awake again, on the new weights
        assert answer.token_ids and len(answer.logprobs) == len(answer.token_ids)


def test_agent_runs_go_on_at_once_and_report_in_the_calling_thread():
    from worker.training.rl_pool import run_concurrently

    started: list[int] = []
    gate = threading.Barrier(4, timeout=10)  # four runs must be in flight together to pass it

    def work(item: int) -> int:
        started.append(item)
        if item < 4:
            gate.wait()
        if item == 5:
            raise RuntimeError("sandbox gone")
        return item * 10

    results: dict[int, object] = {}
    caller = threading.current_thread()

    def done(item: int, result: object) -> None:
        assert threading.current_thread() is caller  # progress and database writes stay in the job's thread
        results[item] = result

    states = RolloutStates(4)
    run_concurrently(range(7), work, 4, done, states)
    assert {k: v for k, v in results.items() if k != 5} == {k: k * 10 for k in (0, 1, 2, 3, 4, 6)}
    assert isinstance(results[5], RuntimeError)  # one run's failure is that run's
    assert states.snapshot()["done"] == 6 and states.snapshot()["failed"] == 1 and states.peak == 4


class Counting:
    """A runner of quick rollouts that notes how many run at once (the pool's bound, not a sandbox)."""

    def __init__(self) -> None:
        self.active = 0
        self.most = 0
        self.lock = threading.Lock()

    def run(self, task, index, timeout_s, policy, seed):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(0.1)
        with self.lock:
            self.active -= 1
        return index


def test_partial_rollouts_keep_the_slots_busy_within_the_staleness_bound_and_the_stages_batches():
    runner = Counting()
    pool = RolloutPool([Task("t")], runner, policy=None, n_rollouts=2, timeout_s=60.0, seed_for=lambda b, t, j: 0,
                       concurrency=16, partial=True, max_staleness=1, iterations=3)
    try:
        batches = [pool.next_batch(last=k == 2)[0] for k in range(3)]
    finally:
        pool.close()
    # batch x (1 + max_staleness) = 4 rollouts ahead of training at most, though 16 slots are free
    assert runner.most == 4
    # the stage launches exactly its iterations' batches: 6 rollouts, each trained once
    assert sorted(i for batch in batches for i in batch) == list(range(6)) and all(len(b) == 2 for b in batches)


def test_nccl_weight_transfer_without_vllm_or_a_gpu_is_refused_with_the_reason(tmp_path):
    from transformers import AutoModelForCausalLM

    from worker.training.rl_serving import ReloadError

    folder = build_tiny_model(tmp_path / "policy")
    with PolicyServer(folder) as server:
        policy = RemotePolicy(ServerConfig(base_url=server.base_url, model="policy", reload="vllm_nccl"), tmp_path)
        with pytest.raises(ReloadError, match="NCCL weight transfer to http://127.0.0.1:[0-9]+ is not available: "):
            policy.publish(AutoModelForCausalLM.from_pretrained(folder), 1)
    assert policy.version == 0  # never claims weights the server did not take
