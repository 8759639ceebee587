"""Load: 20 concurrent users browse trees, trajectories, judge runs and audits while a job streams.

The server is daphne in its own process (as `make run` serves the app) on PostgreSQL (a fresh
database made for this run and dropped after; SQLite when no PostgreSQL answers, said so in the
output), with the demo data seeded. A Celery worker runs a long self-test job whose events stream
to a WebSocket watcher during the whole load. wrk (`apt-get install wrk`) drives the load: 20
connections, each one a logged-in user cycling through the pages. The baseline is the same page
mix with a single user, measured in the same run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PG_SERVER = os.environ.get("KLONG_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")
USERS, DURATION_S, BASELINE_S = 20, 20, 6
P99_TARGET_MS = 500


def _postgres_database() -> tuple[str, str] | None:
    """A fresh database on the local PostgreSQL, or None when there is none to reach."""
    try:
        import psycopg

        name = f"klong_bench_load_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=2) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name, PG_SERVER.rsplit("/", 1)[0] + f"/{name}"
    except Exception as exc:  # no server, no rights: fall back to the embedded default
        print(f"# PostgreSQL not reachable at {PG_SERVER} ({exc}); using SQLite", flush=True)
        return None


def _drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=2) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _login(base: str, username: str, password: str) -> str:
    import requests

    session = requests.Session()
    session.get(f"{base}/login/", timeout=10)
    response = session.post(f"{base}/login/", data={"username": username, "password": password,
                                                    "csrfmiddlewaretoken": session.cookies["csrftoken"]},
                            headers={"Referer": f"{base}/login/"}, timeout=10, allow_redirects=False)
    if response.status_code != 302:
        raise RuntimeError(f"login failed: {response.status_code}")
    return session.cookies["sessionid"]


def _pages() -> list[str]:
    """What a user browses: rubric trees, trajectories and their turns, judge runs, audits, the job."""
    from apps.jobs.models import Job
    from apps.judging.models import JudgeRun
    from apps.papers.models import Paper
    from apps.trajectories.models import Trajectory

    pages = ["/", "/papers/", "/rubrics/", "/trajectories/", "/judging/", "/jobs/", "/audit/"]
    for paper in Paper.objects.order_by("slug")[:3]:
        pages += [f"/papers/{paper.slug}/", f"/rubrics/{paper.slug}/edit/", f"/rubrics/{paper.slug}/versions/",
                  f"/api/papers/{paper.pk}/draft/"]
    for trajectory in Trajectory.objects.order_by("-turn_count")[:3]:
        pages += [f"/trajectories/{trajectory.pk}/", f"/api/trajectories/{trajectory.pk}/turns/?start=0&end=100",
                  f"/trajectories/{trajectory.pk}/split/"]
    runs = list(JudgeRun.objects.order_by("pk").values_list("pk", flat=True)[:3])
    pages += [f"/judging/runs/{pk}/" for pk in runs]
    if runs:
        pages.append(f"/audit/compare/?runs={','.join(map(str, runs[:2]))}")
    pages += [f"/jobs/{pk}/" for pk in Job.objects.order_by("-pk").values_list("pk", flat=True)[:2]]
    return pages


LUA = """
local paths = {%s}
local n = 0
wrk.headers["Cookie"] = "sessionid=%s"
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n %% #paths) + 1])
end
%s
"""
# A user reads a page before opening the next: 0.5-1.5 s here (real reading takes longer; this
# keeps 20 users busy at ~20 pages/s). wrk's latency figures leave the pause out.
THINK = "delay = function() return math.random(500, 1500) end"


def _wrk(base: str, paths: list[str], cookie: str, connections: int, seconds: int, folder: Path,
         think: bool = False) -> dict[str, float]:
    """``connections`` users cycling through ``paths``: back to back, or with a reading pause."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "pages.lua"
    script.write_text(LUA % (", ".join(f'"{p}"' for p in paths), cookie, THINK if think else ""))
    threads = min(2, connections)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
                          "-s", str(script), base], capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50": ms("50%"), "p99": ms("99%"),
            "errors": errors + (int(non_2xx.group(1)) if non_2xx else 0),
            "requests": float(re.search(r"(\d+) requests in", out).group(1))}


def _wrk_split(bases: list[str], paths: list[str], cookie: str, connections: int, seconds: int,
               folder: Path) -> dict[str, float]:
    """The users spread over several web processes, as a proxy in front of them would spread them."""
    share = connections // len(bases)
    with ThreadPoolExecutor(len(bases)) as pool:
        runs = list(pool.map(lambda i: _wrk(bases[i], paths, cookie, share, seconds, folder / str(i)),
                             range(len(bases))))
    # Percentiles cannot be merged exactly: the worse process's figure stands for all.
    return {"rps": sum(r["rps"] for r in runs), "p50": max(r["p50"] for r in runs),
            "p99": max(r["p99"] for r in runs), "errors": sum(r["errors"] for r in runs),
            "requests": sum(r["requests"] for r in runs)}


def _daphne(env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port),
                             "klong_site.asgi:application"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_port(port, proc, "daphne")
    return proc, port


def _watch_job(base: str, job_id: int, cookie: str, stop: threading.Event, counter: list[int]) -> None:
    """A browser tab on the job page: counts the events the job streams over the WebSocket."""
    from websockets.sync.client import connect

    url = base.replace("http://", "ws://") + f"/ws/jobs/{job_id}/"
    with connect(url, additional_headers={"Cookie": f"sessionid={cookie}", "Origin": base}) as ws:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                ws.recv(timeout=0.5)
                counter[0] += 1


def main() -> int:
    if shutil.which("wrk") is None:
        print("# wrk is not installed (apt-get install wrk): load benchmark skipped", flush=True)
        return 0
    data_dir = Path(tempfile.mkdtemp(prefix="klong-bench-load-"))
    database = _postgres_database()
    os.environ.update({"KLONG_DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "klong_site.settings",
                       "SECRET_KEY": f"bench-load-{uuid.uuid4().hex}{uuid.uuid4().hex}", "LOG_LEVEL": "WARNING",
                       "KLONG_LOGIN_MAX_FAILURES_PER_ADDRESS": "1000"})
    os.environ.pop("REDIS_URL", None)
    if database:
        os.environ["DATABASE_URL"] = database[1]
    else:
        os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.db import connections

    from apps.core import embedded_redis
    from apps.core.demo import seed_demo
    from apps.jobs.services.launching import launch_job

    redis = worker = None
    servers: list[subprocess.Popen] = []
    try:
        redis = embedded_redis.start(settings.DATA_DIR, settings.EMBEDDED_REDIS_SOCKET)
        call_command("migrate", verbosity=0)
        admin = get_user_model().objects.create_superuser("bench-admin", password="bench-pass-1234")
        viewer = get_user_model().objects.create_user("bench-viewer", password="bench-pass-1234")
        viewer.groups.add(Group.objects.get(name="viewer"))
        seed_demo(admin)
        paths = _pages()
        connections.close_all()

        env = os.environ.copy()
        daphne, port = _daphne(env)
        servers.append(daphne)
        worker = subprocess.Popen([str(Path(sys.executable).parent / "celery"), "-A", "klong_site.celery_app", "worker",
                                   "-Q", "cpu", "-c", "1", "--without-gossip", "--without-mingle", "--loglevel", "ERROR"],
                                  cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        cookie = _login(base, "bench-viewer", "bench-pass-1234")
        # Warm every page once (and check each answers) before anything is timed.
        import requests

        for path in paths:
            status = requests.get(base + path, cookies={"sessionid": cookie}, timeout=30).status_code
            if status != 200:
                raise RuntimeError(f"{path} answered {status}")
        # Each page alone, warm: where the time goes when the p99 misses.
        alone = {}
        for path in paths:
            start = time.perf_counter()
            requests.get(base + path, cookies={"sessionid": cookie}, timeout=30)
            alone[path] = (time.perf_counter() - start) * 1000

        baseline = _wrk(base, paths, cookie, 1, BASELINE_S, data_dir)
        job = launch_job("selftest", {"steps": 1000, "delay_s": 0.05, "echo": "load"}, admin)
        events, stop = [0], threading.Event()
        watcher = threading.Thread(target=_watch_job, args=(base, job.pk, cookie, stop, events), daemon=True)
        watcher.start()
        deadline = time.monotonic() + 60
        while not job.__class__.objects.filter(pk=job.pk, step__gte=3).exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the job did not start streaming")
            time.sleep(0.2)
        before = events[0]
        browsing = _wrk(base, paths, cookie, USERS, DURATION_S, data_dir, think=True)
        load = _wrk(base, paths, cookie, USERS, DURATION_S, data_dir)
        streamed = events[0] - before
        # The same users over two web processes (one per core), as behind nginx in docs/deploy.md.
        second, second_port = _daphne(env)
        servers.append(second)
        requests.get(f"http://127.0.0.1:{second_port}/", cookies={"sessionid": cookie}, timeout=30)
        split = _wrk_split([base, f"http://127.0.0.1:{second_port}"], paths, cookie, USERS, DURATION_S, data_dir)
        stop.set()
        watcher.join(timeout=5)
        kind = "PostgreSQL" if database else "SQLite"
        print(f"# {len(paths)} pages, {kind}, {os.cpu_count()} CPUs; first one daphne process, then two", flush=True)
        print(f"load_single_user_p50: {baseline['p50']:.1f} ms (baseline, 1 user)", flush=True)
        print(f"load_single_user_rps: {baseline['rps']:.1f} req/s (baseline, 1 user)", flush=True)
        print(f"load_{USERS}_users_browsing_rps: {browsing['rps']:.1f} req/s (each reads a page 0.5-1.5 s)",
              flush=True)
        print(f"load_{USERS}_users_browsing_p50: {browsing['p50']:.1f} ms", flush=True)
        print(f"load_{USERS}_users_browsing_p99: {browsing['p99']:.1f} ms (target: < {P99_TARGET_MS} ms with "
              "PostgreSQL)", flush=True)
        print(f"load_{USERS}_users_browsing_errors: {browsing['errors']:.0f} of {browsing['requests']:.0f} requests "
              "(target: 0)", flush=True)
        # Saturation: the same users with no pause at all; the queue, not the pages, sets the p99.
        print(f"load_{USERS}_users_back_to_back_rps: {load['rps']:.1f} req/s ({load['rps'] / baseline['rps']:.2f}x "
              "one user)", flush=True)
        print(f"load_{USERS}_users_back_to_back_p50: {load['p50']:.1f} ms", flush=True)
        print(f"load_{USERS}_users_back_to_back_p99: {load['p99']:.1f} ms (target: < 500 ms; saturated: a request always waiting per user)",
              flush=True)
        print(f"load_{USERS}_users_back_to_back_errors: {load['errors']:.0f} of {load['requests']:.0f} requests "
              "(target: 0)", flush=True)
        print(f"load_job_events_streamed: {streamed} events during the load (target: > 0)", flush=True)
        print(f"load_{USERS}_users_2_processes_rps: {split['rps']:.1f} req/s (back to back)", flush=True)
        print(f"load_{USERS}_users_2_processes_p50: {split['p50']:.1f} ms", flush=True)
        print(f"load_{USERS}_users_2_processes_p99: {split['p99']:.1f} ms (back to back, saturated)", flush=True)
        print(f"load_{USERS}_users_2_processes_errors: {split['errors']:.0f} of {split['requests']:.0f} requests "
              "(target: 0)", flush=True)
        slowest = sorted(alone.items(), key=lambda item: -item[1])[:4]
        print("# slowest pages alone: " + ", ".join(f"{path} {ms:.0f} ms" for path, ms in slowest), flush=True)
    finally:
        _stop(worker)
        for server in servers:
            _stop(server)
        connections.close_all()
        if redis is not None:
            redis.terminate()
        if database:
            _drop_database(database[0])
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
