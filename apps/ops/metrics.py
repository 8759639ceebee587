"""Prometheus metrics, read fresh from the database and Redis at every scrape.

Nothing is counted in process memory: with several web servers and a fleet of workers, the
database and Redis are the only places that see everything, so any web server answers a scrape
with the same figures. Queries are aggregates (one per family), cheap at a 15-60 s scrape interval.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from apps.jobs.heartbeats import read_heartbeats, redis_client
from apps.jobs.models import Job
from apps.jobs.queues import QUEUES
from apps.judging.models import JudgeRun, LeafGrade

log = logging.getLogger(__name__)

# Leaf latency buckets (seconds): a judge call is 0.5 s on a fast endpoint, minutes on a slow one.
LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
LATENCY_WINDOW = timedelta(hours=1)
PRIORITY_STEPS = 10


def queue_keys(queue: str, sep: str = ":") -> list[str]:
    """The Redis lists kombu keeps for one queue: one per priority step, 0 being the bare name."""
    return [queue if step == 0 else f"{queue}{sep}{step}" for step in range(PRIORITY_STEPS)]


def queue_depths(client) -> dict[str, int]:
    pipe = client.pipeline(transaction=False)
    for queue in QUEUES:
        for key in queue_keys(queue):
            pipe.llen(key)
    lengths = iter(pipe.execute())
    return {queue: sum(next(lengths) for _ in range(PRIORITY_STEPS)) for queue in QUEUES}


class KlongCollector:
    """One scrape: jobs, queues, workers and sandboxes, judge calls, cost and latency."""

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        yield from self.jobs()
        yield from self.judge()
        errors = GaugeMetricFamily("klong_scrape_error", "1 when a part of the scrape failed", labels=["part"])
        for part, collect in (("redis", self.redis_parts),):
            try:
                yield from collect()
                errors.add_metric([part], 0)
            except Exception:  # Redis away: the database figures still come through
                log.warning("metrics: %s part failed", part, exc_info=True)
                errors.add_metric([part], 1)
        yield errors
        duration = GaugeMetricFamily("klong_scrape_duration_seconds", "Time this scrape took")
        duration.add_metric([], time.perf_counter() - started)
        yield duration

    def jobs(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("klong_jobs", "Jobs by state, kind and queue", labels=["state", "kind", "queue"])
        for row in Job.objects.order_by().values("state", "kind", "queue").annotate(n=Count("id")):
            family.add_metric([row["state"], row["kind"], row["queue"]], row["n"])
        yield family

    def judge(self) -> Iterator[Metric]:
        totals = JudgeRun.objects.filter(kind=JudgeRun.Kind.MODEL).aggregate(
            runs=Count("id"), calls=Sum("calls"), cost=Sum("cost_usd"), prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"), seconds=Sum("duration_s"), leaves=Sum("n_leaves"),
            invalid=Sum("n_invalid"),
        )
        for name, key, text in (
            ("klong_judge_runs", "runs", "Model judge runs finished"),
            ("klong_judge_calls", "calls", "Model calls made by judges"),
            ("klong_judge_cost_usd", "cost", "Judge spend in US dollars"),
            ("klong_judge_prompt_tokens", "prompt", "Prompt tokens sent by judges"),
            ("klong_judge_completion_tokens", "completion", "Completion tokens received by judges"),
            ("klong_judge_run_seconds", "seconds", "Wall time of judge runs, summed"),
            ("klong_judge_leaves", "leaves", "Leaves graded by model judges"),
            ("klong_judge_invalid_leaves", "invalid", "Leaves whose grade was unusable"),
        ):
            family = CounterMetricFamily(name, text)
            family.add_metric([], float(totals[key] or 0))
            yield family
        # Per-leaf latency over the last hour: a histogram built by one conditional aggregate.
        recent = LeafGrade.objects.filter(
            run__kind=JudgeRun.Kind.MODEL, run__created_at__gte=timezone.now() - LATENCY_WINDOW
        )
        counts = recent.aggregate(
            total=Count("id"), seconds=Sum("latency_s"),
            **{f"le_{i}": Count("id", filter=Q(latency_s__lte=bound)) for i, bound in enumerate(LATENCY_BUCKETS)},
        )
        buckets = [(str(bound), counts[f"le_{i}"]) for i, bound in enumerate(LATENCY_BUCKETS)]
        buckets.append(("+Inf", counts["total"]))
        family = HistogramMetricFamily(
            "klong_judge_leaf_latency_seconds", "Time to grade one leaf, leaves of runs from the last hour",
            buckets=buckets, sum_value=float(counts["seconds"] or 0),
        )
        yield family

    def redis_parts(self) -> Iterator[Metric]:
        client = redis_client()
        depths = GaugeMetricFamily("klong_queue_depth", "Tasks waiting in a Celery queue (all priorities)",
                                   labels=["queue"])
        for queue, depth in queue_depths(client).items():
            depths.add_metric([queue], depth)
        yield depths

        beats = read_heartbeats(client=client)
        alive_after = 3 * settings.KLONG_WORKER_HEARTBEAT_S
        per_queue: Counter[str] = Counter()
        age = GaugeMetricFamily("klong_worker_heartbeat_age_seconds", "Seconds since a worker's last heartbeat",
                                labels=["worker", "node"])
        running = GaugeMetricFamily("klong_worker_running_jobs", "Jobs a worker runs now", labels=["worker"])
        sandboxes = GaugeMetricFamily("klong_sandboxes", "Sandboxes running, per Docker host", labels=["docker_host"])
        per_host: dict[str, int] = {}
        for name, beat in sorted(beats.items()):
            age.add_metric([name, beat.get("node", "")], beat["age_s"])
            if beat["age_s"] > alive_after:
                continue  # silent workers keep their age series, nothing else
            per_queue.update(beat.get("queues", []))
            running.add_metric([name], beat.get("running_jobs") or 0)
            if beat.get("sandboxes") is not None:
                # Workers sharing a Docker host all report its count: one series per host.
                host = beat.get("docker_host", "")
                per_host[host] = max(per_host.get(host, 0), beat["sandboxes"])
        workers = GaugeMetricFamily("klong_workers", "Workers with a fresh heartbeat, per queue", labels=["queue"])
        for queue in QUEUES:
            workers.add_metric([queue], per_queue.get(queue, 0))
        total = GaugeMetricFamily("klong_sandboxes_total", "Sandboxes running across all workers")
        for host, count in sorted(per_host.items()):
            sandboxes.add_metric([host], count)
        total.add_metric([], sum(per_host.values()))
        yield from (workers, age, running, sandboxes, total)


def render_metrics() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KlongCollector())
    return generate_latest(registry)
