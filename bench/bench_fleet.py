"""Fleet figures for the scale note in docs/deploy.md: what one Redis, one judge worker and one
sandbox host carry, each next to a baseline measured in the same run.

1. Events through Redis: ``apps.jobs.progress.publish`` (the call every running job makes for its
   live page) from 1 and 2 processes, against raw Redis RPUSH from one client (the floor).
2. Judge calls per worker: a 2,000-leaf tree graded against a loopback model server answering at
   once, so the figure is the judge's own cost per call (the server shares the 2 cores: a lower
   bound). Baseline: the bare HTTP client making the same number of calls.
3. Sandboxes per host: sandboxes opened through worker.sandbox on the real container engine
   (podman serving the Docker API), the time to open one and run a command in it, and the host
   memory each idle one holds. Skipped with a line saying so when no engine answers.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from _django import line  # first: sets up Django on the embedded defaults
from django.conf import settings

from apps.core import embedded_redis

SECONDS = 2.0
LEAVES = 2000
CONCURRENCY = 32
SANDBOXES = 8
PODMAN = "unix:///tmp/podman.sock"


def publish_rate(seconds: float = SECONDS) -> float:
    from apps.jobs.progress import publish

    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        publish(1, {"kind": "metric", "step": count, "values": {"loss": 0.5}})
        count += 1
    return count / (time.perf_counter() - started)


def _publish_worker(queue) -> None:
    queue.put(publish_rate())


def redis_rpush_rate(seconds: float = SECONDS) -> float:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        client.rpush("bench:fleet", b"x" * 200)
        count += 1
    client.delete("bench:fleet")
    return count / (time.perf_counter() - started)


def commands_per_event(samples: int = 200) -> float:
    """Redis commands one publish() costs, read from the server's own counter."""
    import redis

    from apps.jobs.progress import publish

    client = redis.Redis.from_url(settings.REDIS_URL)
    before = int(client.info("stats")["total_commands_processed"])
    for step in range(samples):
        publish(1, {"kind": "metric", "step": step, "values": {"loss": 0.5}})
    after = int(client.info("stats")["total_commands_processed"])
    return (after - before - 1) / samples  # the second INFO counts itself


def redis_server_ops() -> float | None:
    """What the Redis server itself sustains: redis-benchmark, 50 clients, one command at a time each
    (as the channel layer sends them)."""
    import shutil
    import subprocess

    tool = shutil.which("redis-benchmark")
    if tool is None:
        return None
    socket = settings.EMBEDDED_REDIS_SOCKET
    out = subprocess.run([tool, "-s", str(socket), "-q", "-n", "200000", "-c", "50", "-t", "rpush"],
                         capture_output=True, text=True, timeout=120).stdout
    # Progress lines ("RPUSH: rps=...") then the result: "RPUSH: 512820.50 requests per second, ...".
    found = re.findall(r"RPUSH: ([0-9.]+) requests per second", out)
    return float(found[-1]) if found else None


def events() -> None:
    one = publish_rate()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    procs = [context.Process(target=_publish_worker, args=(queue,)) for _ in range(2)]
    for proc in procs:
        proc.start()
    two = sum(queue.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join()
    raw = redis_rpush_rate()
    per_event = commands_per_event()
    server = redis_server_ops()
    line("fleet_publish_events_per_s_1_process", one, "events/s", "one job's live updates, >= 500")
    line("fleet_publish_events_per_s_2_processes", two, "events/s", "2 workers on 2 cores")
    line("fleet_redis_rpush_per_s_baseline", raw, "ops/s", "baseline: raw Redis from one Python client")
    print(f"fleet_publish_vs_raw_redis: {one / raw:.2f} ratio", flush=True)
    line("fleet_redis_commands_per_event", per_event, "commands", "server-side cost of one publish()")
    if server is None:
        print("fleet_redis_server_ops_per_s: skipped, no redis-benchmark", flush=True)
        return
    line("fleet_redis_server_ops_per_s", server, "ops/s", "redis-benchmark RPUSH, 50 clients, no pipelining")
    line("fleet_redis_event_ceiling_per_s", server / per_event, "events/s", "server ops / commands per event")


def judge() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_judge import make_submission, make_tree, start_server

    from apps.judging.judge.grader import JudgeSettings, grade_tree
    from apps.judging.judge.prompts import PaperContext
    from apps.judging.llm import ChatClient, EndpointConfig
    from apps.rubrics.paperbench import flatten

    proc, base_url = start_server(0.0)
    try:
        client = ChatClient(EndpointConfig(name="bench", base_url=base_url, model="stub", concurrency=CONCURRENCY,
                                           max_retries=2, timeout_s=30))
        paper = PaperContext("Bench paper", "# Bench paper\nWe study loaders.\n" * 40)
        with tempfile.TemporaryDirectory() as tmp:
            submission = make_submission(Path(tmp))
            grade_tree(flatten(make_tree(CONCURRENCY, per_group=CONCURRENCY)), paper, submission, client)
            started = time.perf_counter()
            outcome = grade_tree(flatten(make_tree(LEAVES)), paper, submission, client, JudgeSettings())
            graded = time.perf_counter() - started
        assert outcome.n_invalid == 0
        from concurrent.futures import ThreadPoolExecutor

        messages = [{"role": "user", "content": "x" * 2000}]
        started = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(lambda _: client.chat(messages), range(LEAVES)))
        bare = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    line("fleet_judge_leaf_calls_per_s_per_worker", LEAVES / graded, "calls/s", "instant endpoint, c32")
    line("fleet_bare_client_calls_per_s_baseline", LEAVES / bare, "calls/s", "baseline")
    print(f"fleet_judge_vs_bare_client: {bare / graded:.2f} ratio", flush=True)


def host_memory_used() -> int:
    import psutil

    memory = psutil.virtual_memory()
    return memory.total - memory.available


def sandbox_memory(box) -> int:
    """Host memory one sandbox holds: the resident memory of its conmon monitor and every process
    under it (the container's processes). podman's stats API needs cgroup v2 accounting, which
    this kernel's runc setup lacks, so the processes are read from /proc instead."""
    import psutil

    total = 0
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "conmon" and box.id in " ".join(proc.info["cmdline"] or []):
            for member in [proc, *proc.children(recursive=True)]:
                total += member.memory_info().rss
    return total


def sandboxes() -> None:
    from worker.sandbox import SandboxSpec, docker_available, open_sandbox

    image = os.environ.get("KLONG_SANDBOX_IMAGE", "localhost/klong-sandbox:host")
    if not docker_available(PODMAN):
        print(f"fleet_sandboxes: skipped, no Docker API at {PODMAN}", flush=True)
        return
    spec = SandboxSpec(backend="docker", image=image, docker_host=PODMAN, cpus=0.5, memory_mb=256,
                       wall_clock_s=600)
    boxes, opened, execs = [], [], []
    try:
        for _ in range(SANDBOXES):
            started = time.perf_counter()
            box = open_sandbox(spec, slots=None)
            opened.append(time.perf_counter() - started)
            boxes.append(box)
            result = box.exec("true")
            assert result.ok, result
            execs.append(result.duration_s)
        memory = sorted(sandbox_memory(box) for box in boxes)
    finally:
        for box in boxes:
            box.close()
    opened.sort()
    line("fleet_sandbox_open_s_median", opened[len(opened) // 2], "s", f"{SANDBOXES} sandboxes, podman + runc")
    line("fleet_sandbox_exec_ms_median", sorted(execs)[len(execs) // 2] * 1000, "ms", "`true` in an open sandbox")
    line("fleet_sandbox_idle_memory_mib_median", memory[len(memory) // 2] / 2**20, "MiB",
         "RSS of conmon + the container processes, idle")


def main() -> None:
    redis_proc = embedded_redis.start(settings.DATA_DIR, settings.EMBEDDED_REDIS_SOCKET)
    try:
        events()
    finally:
        redis_proc.terminate()
    judge()
    sandboxes()


if __name__ == "__main__":
    main()
