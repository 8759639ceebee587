"""The ranks of one node of a training job over several nodes (kind ``ranks``).

Node 0's job (an SFT or RL job with ``nodes`` > 1) starts its own ranks with a rendezvous on its
machine, then queues one ``ranks`` job per other node on the GPU queue of its size; each runs here
on another worker and starts that node's ranks at the rendezvous (``sharded.run_node``). The launch
folder is the parent job's, on storage every node sees (DATA_DIR). Launched by node 0 only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings

from apps.jobs.models import Job
from apps.jobs.progress import JobCancelled, Progress
from apps.jobs.services.control import cancel_job
from apps.jobs.services.launching import launch_job
from worker.training.sharded import Sharding, ShardingError, run_node, write_nodes_file

# Where each kind's ranks read their launch files (worker/engines/sft.py, worker/training/sharded.py).
LAUNCH_FOLDERS = {"sft": "launch", "rl": "ranks"}


def node_folder(parent: Job) -> Path:
    return Path(settings.DATA_DIR) / "checkpoints" / f"job-{parent.pk}" / LAUNCH_FOLDERS[parent.kind]


def run(job: Job, progress: Progress) -> dict[str, Any]:
    parent = job.parent
    node_rank = int(job.config.get("node_rank", 0))
    if parent is None or parent.kind not in LAUNCH_FOLDERS:
        raise ShardingError("A ranks job belongs to an SFT or RL job over several nodes, which launches it.")
    nodes = int(parent.config.get("nodes", 1))
    if not 0 < node_rank < nodes:
        raise ShardingError(f"Node {node_rank} is not one of job {parent.pk}'s other nodes (1 to {nodes - 1}).")
    cancelled = False

    def should_stop() -> bool:
        nonlocal cancelled
        try:
            progress.check_cancelled()
        except JobCancelled:
            cancelled = True
        parent.refresh_from_db(fields=["state"])
        return cancelled or parent.state in Job.FINISHED

    progress.update(0.0, f"node {node_rank} of job {parent.pk}: starting its ranks", force=True)
    result = run_node(node_folder(parent), node_rank, should_stop)
    if cancelled:
        raise JobCancelled()
    return {**result, "job": parent.pk}


def start_other_nodes(job: Job, sharding: Sharding, module: str) -> list[Job]:
    """Node 0's job, its ranks starting: describe the run for the other nodes and queue their jobs
    on the GPU queue of this job's size (one worker per node takes each)."""
    write_nodes_file(node_folder(job), module, sharding)
    return [launch_job("ranks", {"node_rank": k, "gpus": job.gpus}, job.created_by, parent=job,
                       title=f"{job.title}: node {k}", priority=job.priority)
            for k in range(1, sharding.nodes)]


def stop_other_nodes(nodes: list[Job]) -> None:
    """The run is over (or failed): the other nodes' jobs still queued or running stop too."""
    for node in nodes:
        node.refresh_from_db()
        if not node.is_finished:
            cancel_job(node)
