"""Sandbox and agent overheads: what each agent step pays besides the model and the command.

- exec of ``true`` in a bubblewrap sandbox, against the same ``sh -c true`` as a bare subprocess
  (the baseline: the price of namespaces, mounts and the memory limit);
- a snapshot of a 200-file submission after one file changed (one commit);
- the same exec and open/close through the Docker API when one answers (DOCKER_HOST, e.g. podman);
- the agent's context at step 500 of a 1,000-turn run (plan the split, render the last window),
  against ``plan_split`` alone on the same turns.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.trajectories.splitting import SplitConfig, TurnSpec, plan_split  # noqa: E402
from worker.agent.context import ContextBuilder, ContextTurn  # noqa: E402
from worker.sandbox import SandboxSpec, docker_available, open_sandbox  # noqa: E402


def median_ms(func, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def line(name: str, value: float, unit: str, target: str) -> None:
    print(f"{name}: {value:.1f} {unit} (target: {target})", flush=True)


def bench_bwrap() -> None:
    bare = median_ms(lambda: subprocess.run(["/bin/sh", "-c", "true"], check=True), 30)
    with open_sandbox(SandboxSpec(backend="bwrap", wall_clock_s=600), slots=None) as box:
        exec_ms = median_ms(lambda: box.exec("true"), 30)
        box.exec("mkdir -p src && for i in $(seq 1 200); do echo \"line $i\" > src/f$i.py; done")
        box.snapshot("200 files")
        counter = iter(range(10**6))

        def change_and_snapshot() -> None:
            box.write_file("/home/submission/src/f1.py", f"changed {next(counter)}\n".encode())
            assert box.snapshot("one change")

        snap_ms = median_ms(change_and_snapshot, 10)
    line("bwrap exec (true)", exec_ms, "ms", "< 50 ms")
    line("bare subprocess (baseline)", bare, "ms", "-")
    print(f"bwrap exec / bare subprocess: {exec_ms / bare:.1f}x", flush=True)
    line("bwrap write + snapshot, 200-file submission", snap_ms, "ms", "< 150 ms")


def bench_docker() -> None:
    if not docker_available():
        print("docker: skipped (no Docker API at DOCKER_HOST; start `podman system service`)", flush=True)
        return
    start = time.perf_counter()
    box = open_sandbox(SandboxSpec(backend="docker", wall_clock_s=600), slots=None)
    opened = (time.perf_counter() - start) * 1000
    try:
        exec_ms = median_ms(lambda: box.exec("true"), 15)
        snap_ms = median_ms(lambda: (box.write_file("/home/submission/x", str(time.time()).encode()),
                                     box.snapshot("x")), 5)
    finally:
        start = time.perf_counter()
        box.close()
        closed = (time.perf_counter() - start) * 1000
    line("docker open (container + first snapshot)", opened, "ms", "< 3000 ms")
    line("docker exec (true)", exec_ms, "ms", "< 300 ms")
    line("docker write + snapshot", snap_ms, "ms", "< 600 ms")
    line("docker close (kill + remove)", closed, "ms", "< 2000 ms")


def bench_context() -> None:
    turns = [ContextTurn("system", "You are an agent. " * 300, []), ContextTurn("user", "Reproduce the paper. " * 200, [])]
    for i in range(499):
        call = {"id": f"c{i}", "type": "function", "function": {"name": "bash", "arguments": '{"cmd": "ls"}'}}
        turns.append(ContextTurn("assistant", "Let me look. " * (20 + i % 50), [call]))
        turns.append(ContextTurn("tool", "output line\n" * (50 + (i * 37) % 400), [], f"c{i}"))
    builder = ContextBuilder(32768, 4096)
    builder.messages(turns, structured=True)  # token counts are cached per turn after the first step
    step_ms = median_ms(lambda: builder.messages(turns, structured=True), 10)
    specs = [TurnSpec(i, t.role, builder.counts[i]) for i, t in enumerate(turns)]
    plan_ms = median_ms(lambda: plan_split(specs, SplitConfig(l_max=32768 - 4096, overlap_turns=0)), 10)
    line(f"agent context at {len(turns)} turns (plan + render last window)", step_ms, "ms", "< 50 ms")
    line("plan_split alone (baseline)", plan_ms, "ms", "-")
    print(f"context / plan_split: {step_ms / plan_ms:.1f}x", flush=True)


if __name__ == "__main__":
    tempfile.tempdir = None
    bench_bwrap()
    bench_docker()
    bench_context()
