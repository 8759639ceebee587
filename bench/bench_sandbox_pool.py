"""Per-sandbox costs of a rollout pool, on both backends: the inputs of docs/deploy.md's 10,000-sandbox arithmetic.

For bubblewrap and for the Docker API (podman + runc here; a podman service is started on a private
socket when DOCKER_HOST does not answer), with POOL sandboxes open at once:

- opening POOL sandboxes from POOL threads at once (opens per second of one engine), against
  opening one alone (the baseline, same run);
- a tool call's fixed cost: POOL threads each running ``true`` in their own sandbox for SECONDS,
  calls per second and host CPU milliseconds per call (the machine's busy time over the calls,
  so other work on this shared VM counts too), against a bare ``sh -c true`` subprocess from as
  many threads (the baseline);
- host memory per sandbox: idle, and with one command (``sleep``) running in each: the resident
  memory of the processes a sandbox holds (docker: its conmon monitor and the container's
  processes; bubblewrap: the bwrap processes and the command), and the engine's own growth.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
from _django import line  # first: sets up Django on the embedded defaults (the sandbox package needs it)

from worker.sandbox import SandboxSpec, docker_available, docker_client, open_sandbox
from worker.sandbox.image import DEFAULT_IMAGE, ensure_image

POOL = 8
SECONDS = 4.0
MiB = 2**20


def busy_s() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def calls_per_s(call_for: list, seconds: float = SECONDS) -> tuple[float, float, float]:
    """(calls per second, host CPU ms per call, this process's CPU ms per call) with one thread
    per entry of ``call_for``. The last is the driver's share: what the Python process running
    the sessions (the RL job) spends per call, under one GIL."""
    stop = time.monotonic() + seconds
    counts = [0] * len(call_for)

    def loop(k: int) -> None:
        while time.monotonic() < stop:
            call_for[k]()
            counts[k] += 1

    me = psutil.Process()
    cpu, own, started = busy_s(), sum(me.cpu_times()[:2]), time.perf_counter()
    threads = [threading.Thread(target=loop, args=(k,)) for k in range(len(call_for))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu, own = time.perf_counter() - started, busy_s() - cpu, sum(me.cpu_times()[:2]) - own
    calls = max(1, sum(counts))
    return sum(counts) / wall, 1000 * cpu / calls, 1000 * own / calls


def tree_rss(procs: list[psutil.Process]) -> int:
    seen, total = set(), 0
    for proc in procs:
        try:
            for member in [proc, *proc.children(recursive=True)]:
                if member.pid not in seen:
                    seen.add(member.pid)
                    total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def held_memory(backend: str, boxes: list) -> int:
    """Resident memory of the processes the sandboxes hold on this machine, in all."""
    if backend == "docker":
        mine = [p for p in psutil.process_iter(["name", "cmdline"])
                if p.info["name"] == "conmon" and any(b.id in " ".join(p.info["cmdline"] or []) for b in boxes)]
        return tree_rss(mine)
    return tree_rss([c for c in psutil.Process().children() if c.name() in ("bwrap", "setpriv")])


def measure(backend: str, spec: SandboxSpec, engine: psutil.Process | None) -> None:
    tag = f"sandbox_pool_{backend}"
    started = time.perf_counter()
    open_sandbox(spec, slots=None).close()
    alone = time.perf_counter() - started
    engine_before = engine.memory_info().rss if engine else 0
    with ThreadPoolExecutor(POOL) as pool:
        started = time.perf_counter()
        boxes = list(pool.map(lambda _: open_sandbox(spec, slots=None), range(POOL)))
        together = time.perf_counter() - started
    try:
        idle = held_memory(backend, boxes) / POOL
        engine_growth = ((engine.memory_info().rss - engine_before) / POOL) if engine else None
        rate, cpu_ms, driver_ms = calls_per_s([lambda b=b: b.exec("true") for b in boxes])
        sleepers = [threading.Thread(target=b.exec, args=("sleep 3",), kwargs={"timeout_s": 20}) for b in boxes]
        for t in sleepers:
            t.start()
        time.sleep(1.5)
        busy = held_memory(backend, boxes) / POOL
        for t in sleepers:
            t.join()
    finally:
        for box in boxes:
            box.close()
    line(f"{tag}_open_s", together, "s", f"{POOL} at once; one alone {alone:.2f} s (baseline)")
    line(f"{tag}_opens_per_s", POOL / together, "opens/s", f"baseline one at a time {1 / alone:.2f} opens/s")
    line(f"{tag}_calls_per_s", rate, "calls/s", f"`true` from {POOL} threads, one sandbox each, 2-core VM")
    line(f"{tag}_cpu_ms_per_call", cpu_ms, "ms", "host CPU per tool call, whole machine")
    line(f"{tag}_driver_cpu_ms_per_call", driver_ms, "ms", "of it in the Python process making the calls")
    line(f"{tag}_idle_memory_mib", idle / MiB, "MiB", "resident per idle sandbox")
    line(f"{tag}_running_memory_mib", busy / MiB, "MiB", "resident per sandbox running `sleep`")
    if engine_growth is not None:
        line(f"{tag}_engine_memory_mib", engine_growth / MiB, "MiB", "podman service growth per open sandbox")


def bare_baseline() -> None:
    rate, cpu_ms, _ = calls_per_s([lambda: subprocess.run(["/bin/sh", "-c", "true"], check=True)] * POOL)
    line("sandbox_pool_bare_calls_per_s_baseline", rate, "calls/s", f"bare `sh -c true` from {POOL} threads")
    line("sandbox_pool_bare_cpu_ms_per_call_baseline", cpu_ms, "ms", "baseline")


def podman_service() -> tuple[str, subprocess.Popen | None]:
    existing = os.environ.get("DOCKER_HOST", "")
    if existing and docker_available(existing):
        return existing, None
    if shutil.which("podman") is None:
        return "", None
    folder = tempfile.mkdtemp(prefix="klong-bench-podman-")
    socket = f"unix://{folder}/podman.sock"
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", socket], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not docker_available(socket):
        time.sleep(0.2)
    return socket, proc


def main() -> None:
    bare_baseline()
    measure("bwrap", SandboxSpec(backend="bwrap", memory_mb=512, wall_clock_s=600), None)
    socket, proc = podman_service()
    if not socket or not docker_available(socket):
        print("sandbox_pool_docker: skipped, no Docker API (install podman)", flush=True)
        return
    try:
        client = docker_client(socket)
        image = ensure_image(client, DEFAULT_IMAGE)
        client.close()
        spec = SandboxSpec(backend="docker", image=image, docker_host=socket, cpus=0.5, memory_mb=512,
                           wall_clock_s=600)
        measure("docker", spec, psutil.Process(proc.pid) if proc else None)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)


if __name__ == "__main__":
    main()
