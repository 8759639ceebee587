"""The rollout pool: how rollouts per minute scale with concurrent sessions, and how much sandbox
slot time partial rollouts leave idle, each against its baseline in the same run.

1. ``rollout_pool_scaling_32``: real agent rollouts (``AgentRunner``: a bubblewrap sandbox each,
   recorded turn by turn in the database) against the tiny policy served on loopback
   (``PolicyServer`` in its own process as an engine is, batching, with a fixed 200 ms latency per
   call, ``scripted_agent`` replies: three bash calls then submit). Rollouts per minute with 32 sessions at once, as threads of
   this process and in 2 driver processes (``rl_drivers``), against 32 x the rate of one session
   at a time. Also printed: the CPU one rollout costs this machine (this process, the sandboxes
   and their git snapshots, the engine's forward passes), the ceiling that puts on the ratio
   with this many cores (what caps the scaling on a small box), and the same scaling for
   sessions that only call the policy (the pool and the server alone).
2. ``rl_partial_rollouts_sandbox_idle``: progressive RL on the toy task with real tool time
   (each tool step sleeps, standing for the sandbox), 8 sessions: the share of slot time no
   rollout progressed (waiting for the trainer, for stragglers, for a weight swap), mean over the
   steady iterations (not the first, not the stage's last, which waits for every rollout in
   flight), partial rollouts on against off.
CPU figures here (2 cores shared).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
from _django import ROOT, line  # first: sets up Django on the embedded defaults
from django.conf import settings
from django.core.management import call_command

from apps.trajectories.splitting import SplitConfig
from worker.training.rl import Reporter, RLSettings, Stage, Task, rollout_seed, train_rl
from worker.training.rl_agent import AgentRunner, PaperTask
from worker.training.rl_drivers import DriverGroup
from worker.training.rl_pool import RolloutPool
from worker.training.rl_serving import RemotePolicy, ServerConfig
from worker.training.rl_toy import ToyJudge, ToyRunner, toy_tasks
from worker.training.tiny import build_tiny_model

LATENCY_S = 0.2
SOLO = 4  # rollouts run one at a time for the baseline rate
ROUNDS = 3
WIDE = 32
DRIVERS = 2  # driver processes (rl_drivers) for the second wide configuration


def cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def engine_cpu_s(engine: subprocess.Popen) -> float:
    times = psutil.Process(engine.pid).cpu_times()
    return times.user + times.system


def pool_rate(server: Any, folder: Path, rollouts: int, concurrency: int, processes: int = 1) -> tuple[float, float]:
    """(rollouts per minute, CPU seconds per rollout: this process, its sandboxes, the engine) of one
    batch; with ``processes`` > 1 the sessions run in that many driver processes (started before
    the clock starts, as a stage starts them once)."""
    runner = AgentRunner(Path(settings.DATA_DIR), sandbox_backend="bwrap", max_steps=6, l_max=2048)
    policy = RemotePolicy(ServerConfig(base_url=server.base_url, model="policy"), folder / "served")
    task = Task("bench-paper", PaperTask(0, "bench-paper", "# A paper\n\nReproduce it."))
    drivers = DriverGroup(processes, concurrency, [task], runner, policy) if processes > 1 else None
    pool = RolloutPool([task], runner, policy, n_rollouts=rollouts, timeout_s=600.0,
                       seed_for=lambda b, t, j: rollout_seed(0, b, t, j), concurrency=concurrency,
                       is_failure=lambda r: r.end_state != "submitted", drivers=drivers)
    cpu, started = cpu_s() + engine_cpu_s(server.engine), time.perf_counter()
    try:
        done, _ = pool.next_batch(last=True)
        wall = time.perf_counter() - started
        cpu = cpu_s() + engine_cpu_s(server.engine) - cpu
    finally:
        pool.close()
    if len(done) != rollouts:
        raise RuntimeError(f"{rollouts - len(done)} rollouts failed: {pool.failed[:2]}")
    return 60.0 * rollouts / wall, cpu / rollouts


class ChatOnlyRunner:
    """Sessions without a sandbox: four policy calls each (the pool and the server alone)."""

    def run(self, task, index, timeout_s, policy, seed):
        chat = policy.chat_client()
        messages = [{"role": "user", "content": "Reproduce the paper."}]
        for _ in range(4):
            answer = chat.chat(messages)
            messages += [{"role": "assistant", "content": answer.text}, {"role": "tool", "content": "ok"}]
        return index


def chat_only_rate(server: Any, folder: Path, rollouts: int, concurrency: int) -> float:
    policy = RemotePolicy(ServerConfig(base_url=server.base_url, model="policy"), folder / "served")
    pool = RolloutPool([Task("chat", None)], ChatOnlyRunner(), policy, n_rollouts=rollouts, timeout_s=600.0,
                       seed_for=lambda b, t, j: 0, concurrency=concurrency)
    started = time.perf_counter()
    try:
        done, _ = pool.next_batch(last=True)
    finally:
        pool.close()
    assert len(done) == rollouts
    return 60.0 * rollouts / (time.perf_counter() - started)


class Idle(Reporter):
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def metric(self, step: int, **values: float) -> None:
        self.rows.append(values)


def idle_share(model: Path, out: Path, partial: bool) -> float:
    iterations = 6
    rl = RLSettings(policy=str(model), output_dir=out, stages=(Stage(1e6, iterations),), n_rollouts=4,
                    split=SplitConfig(l_max=256, prefix_end=1, overlap_turns=1, history_budget=64, marker_tokens=8,
                                      snippet_min_tokens=4),
                    learning_rate=1e-3, minibatch_size=16, partial_rollouts=partial, max_staleness=1, concurrency=8)
    rows = Idle()
    train_rl(rl, toy_tasks(2, max_turns=4, tokens_per_turn=8, tool_sleep_s=0.25), ToyRunner(), ToyJudge(), rows)
    return 100.0 * statistics.mean(r["sandbox_idle_share"] for r in rows.rows[1:-1])


def main() -> None:
    import torch

    torch.set_num_threads(1)
    settings.KLONG_SANDBOXES_PER_HOST = 0  # the pool's concurrency is what is measured, not Redis slots
    call_command("migrate", verbosity=0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = build_tiny_model(folder / "policy")
        # the engine in its own process, as vLLM or SGLang would be (not sharing this one's GIL)
        engine = subprocess.Popen([sys.executable, "-m", "worker.training.rl_policy_server", str(model), "--latency",
                                   str(LATENCY_S), "--scripted-agent"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            server = SimpleNamespace(base_url=engine.stdout.readline().strip(), engine=engine)
            pool_rate(server, folder, 2, 2)  # warm-up: imports, first sandbox, first forward
            chat_only_rate(server, folder, WIDE, WIDE)  # warm-up: the engine's first wide batches
            # alternate the sides and keep each one's best: load elsewhere on a shared box should
            # not decide the ratio
            runs: dict[str, list[tuple[float, float]]] = {"solo": [], "wide": [], "drivers": [], "chat_solo": [],
                                                          "chat_wide": []}
            for _ in range(ROUNDS):
                runs["solo"].append(pool_rate(server, folder, SOLO, 1))
                runs["wide"].append(pool_rate(server, folder, WIDE, WIDE))
                runs["drivers"].append(pool_rate(server, folder, WIDE, WIDE, processes=DRIVERS))
                runs["chat_solo"].append((chat_only_rate(server, folder, SOLO, 1), 0.0))
                runs["chat_wide"].append((chat_only_rate(server, folder, WIDE, WIDE), 0.0))
            (solo, solo_cpu), (wide, wide_cpu), (driven, _), (chat_solo, _), (chat_wide, _) = (
                max(runs[k]) for k in ("solo", "wide", "drivers", "chat_solo", "chat_wide"))
        finally:
            engine.terminate()
            engine.wait()
        cores = os.cpu_count() or 1
        line("rollout_pool_rollouts_per_min_1", solo, "rollouts/min", "baseline: one session at a time")
        line(f"rollout_pool_rollouts_per_min_{WIDE}", wide, "rollouts/min", f"{WIDE} sessions at once, threads of one "
             "process")
        line(f"rollout_pool_rollouts_per_min_{WIDE}_{DRIVERS}_drivers", driven, "rollouts/min",
             f"{WIDE} sessions at once in {DRIVERS} driver processes")
        best = max(wide, driven)
        print(f"rollout_pool_scaling_{WIDE}: {best / (WIDE * solo):.2f} ratio (target: >= 0.8; the better of threads "
              f"{wide / (WIDE * solo):.2f} and {DRIVERS} driver processes {driven / (WIDE * solo):.2f}; "
              f"{LATENCY_S * 1000:.0f} ms per policy call, {cores} cores)", flush=True)
        line("rollout_pool_cpu_ms_per_rollout", 1000 * wide_cpu, "ms", f"one-at-a-time {1000 * solo_cpu:.0f} ms; this "
             "process, its bwrap sandboxes and git snapshots, and the engine's forward passes, 4 model calls")
        # What this machine allows at best: 32 rollouts need WIDE x cpu seconds of its cores, and
        # one-at-a-time takes 60 / solo seconds each; the ratio cannot pass their quotient.
        ceiling = min(1.0, (60.0 / solo) / (WIDE * wide_cpu / cores))
        print(f"rollout_pool_scaling_{WIDE}_cpu_ceiling: {ceiling:.2f} ratio (target: what {cores} cores allow: "
              f"{WIDE} x {wide_cpu:.3f} CPU s against {60.0 / solo:.2f} s for one rollout alone)", flush=True)
        print(f"rollout_pool_scaling_{WIDE}_without_sandboxes: {chat_wide / (WIDE * chat_solo):.2f} ratio "
              f"(target: >= 0.8; the pool and the batching server alone, 4 calls per session)", flush=True)
        off = idle_share(model, folder / "off", partial=False)
        on = idle_share(model, folder / "on", partial=True)
        line("rl_partial_rollouts_sandbox_idle_off", off, "%", "baseline: partial rollouts off")
        line("rl_partial_rollouts_sandbox_idle", on, "%", "<= 10")


if __name__ == "__main__":
    main()
