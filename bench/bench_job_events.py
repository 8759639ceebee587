"""Worker-to-browser event latency and sustained events per second per job.

A real daphne serves the WebSocket, a real (embedded) Redis carries the channel layer, and the
events are sent by the same ``apps.jobs.progress`` code a worker runs. Baselines in the same run:
the channel layer alone (group_send to a receive in this process), without daphne and the socket;
and durable single-row commits per second on this disk, what bounded the events per second while
every metric point was committed durably (the figure follows the disk's flush time, so it varies
with the machine's load).
"""

from __future__ import annotations

import io
import json
import statistics
import threading
import time

from _django import daphne_server, line  # first: sets up Django on the embedded defaults
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from websockets.sync.client import connect

from apps.core import embedded_redis
from apps.jobs.models import Job, JobMetric
from apps.jobs.progress import Progress, job_group, publish, set_state

LATENCY_EVENTS = 400
THROUGHPUT_SECONDS = 3.0



def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]



def unpack(message: dict) -> list[dict]:
    return message["events"] if message.get("kind") == "batch" else [message]


def baseline_layer_latency(job_id: int) -> list[float]:
    layer = get_channel_layer()

    async def run() -> list[float]:
        channel = await layer.new_channel()
        await layer.group_add(job_group(job_id), channel)
        samples = []
        for i in range(LATENCY_EVENTS):
            sent = time.time()
            await layer.group_send(job_group(job_id), {"type": "job.event", "event": {"i": i, "sent_at": sent}})
            message = await layer.receive(channel)
            samples.append((time.time() - message["event"]["sent_at"]) * 1000)
        await layer.group_discard(job_group(job_id), channel)
        return samples

    return async_to_sync(run)()


def baseline_durable_commits(job_id: int, seconds: float = 1.0) -> float:
    """Rows per second when each one is its own durable commit (the former cost of a metric point)."""
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        JobMetric.objects.create(job_id=job_id, step=done, name="baseline", value=0.0)
        done += 1
    rate = done / (time.perf_counter() - start)
    JobMetric.objects.filter(job_id=job_id, name="baseline").delete()
    return rate


def main() -> None:
    redis_proc = embedded_redis.start(settings.DATA_DIR, settings.EMBEDDED_REDIS_SOCKET)
    call_command("migrate", verbosity=0)
    call_command("createadmin", password="bench-password-1", stdout=io.StringIO())
    admin = get_user_model().objects.get(username="admin")
    client = Client(SERVER_NAME="localhost")
    client.force_login(admin)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    try:
        with daphne_server() as base:
            measure(base, cookie, admin)
    finally:
        if redis_proc is not None:
            redis_proc.terminate()


def measure(base: str, cookie: str, admin) -> None:
    job = Job.objects.create(kind="selftest", state=Job.State.RUNNING, attempt=1, created_by=admin)
    url = base.replace("http://", "ws://") + f"/ws/jobs/{job.pk}/"
    headers = {"Cookie": cookie, "Origin": base}

    # Latency: one event at a time, paced, as progress reports arrive in a real run.
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        json.loads(ws.recv(timeout=10))  # the snapshot
        latencies = []
        for i in range(LATENCY_EVENTS):
            publish(job.pk, {"kind": "progress", "progress": i / LATENCY_EVENTS}, to_list=False)
            event = json.loads(ws.recv(timeout=10))
            latencies.append((time.time() - event["sent_at"]) * 1000)
            time.sleep(0.002)
    line("job_event_latency_p50", statistics.median(latencies), "ms", "< 50 ms")
    line("job_event_latency_p99", percentile(latencies, 99), "ms", "< 200 ms")
    base = baseline_layer_latency(job.pk)
    line("channel_layer_latency_p50_baseline", statistics.median(base), "ms", "baseline")
    print(f"websocket_vs_channel_layer_p50: {statistics.median(latencies) / statistics.median(base):.1f}x")

    # Throughput: a tight loop of metric points (each also written to the database), then
    # the final state, which must arrive last and exact.
    received: list[dict] = []
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        json.loads(ws.recv(timeout=10))

        def reader() -> None:
            while True:
                for event in unpack(json.loads(ws.recv(timeout=30))):
                    received.append(event)
                    if event.get("kind") == "snapshot":
                        return

        thread = threading.Thread(target=reader)
        thread.start()
        progress = Progress(job.pk, attempt=1)
        sent = 0
        start = time.perf_counter()
        while time.perf_counter() - start < THROUGHPUT_SECONDS:
            sent += 1
            progress.metric(sent, loss=1.0 / sent)
        progress.flush()
        set_state(job.pk, Job.State.SUCCEEDED, attempt=1, result={"points": sent})
        thread.join(timeout=60)
        elapsed = time.perf_counter() - start
    points = [e["step"] for e in received if e.get("kind") == "metric"]
    intact = points == list(range(1, sent + 1)) and received[-1]["state"] == "succeeded"
    line("job_events_per_second_sustained", len(points) / elapsed, "events/s", ">= 500 events/s")
    line("durable_commits_per_second_baseline", baseline_durable_commits(job.pk), "commits/s", "baseline")
    print(f"job_events_delivered: {len(points)} of {sent}, in order and final state exact: {intact}")


if __name__ == "__main__":
    main()
