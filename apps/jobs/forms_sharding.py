"""The sharded-training options of the SFT and RL launch forms, and the checks the fleet must pass.

The worker runs them (worker/training/sharded.py, docs/training-at-scale.md): ``strategy`` ddp /
fsdp (FSDP2) / zero3 (DeepSpeed), CPU ``offload``, ``nodes`` machines of ``gpus`` GPUs each; SFT's
form adds activation ``checkpointing``, ``packing`` and ``sequence_parallel`` (RL's form has its own
``gradient_checkpointing`` and ``packing``). What no worker of the fleet can run is refused here,
with the reason, before anything is queued.
"""

from __future__ import annotations

import logging
from typing import Any

from django import forms

from apps.jobs.heartbeats import live_heartbeats
from apps.jobs.queues import gpu_queue

log = logging.getLogger(__name__)

MAX_NODES = 64
STRATEGY_CHOICES = [
    ("ddp", "DDP: a full copy of the model per GPU"),
    ("fsdp", "FSDP2: parameters, gradients and optimizer state sharded over the GPUs"),
    ("zero3", "DeepSpeed ZeRO-3 (workers with deepspeed installed)"),
]


def live_nodes(queue: str) -> tuple[set[str], set[str]]:
    """(machines with a live worker on ``queue``, those of them whose worker has DeepSpeed installed)."""
    try:
        beats = live_heartbeats()
    except Exception:  # Redis away: no worker is known to be live
        log.warning("could not read worker heartbeats", exc_info=True)
        return set(), set()
    serving = [b for b in beats.values() if queue in b.get("queues", [])]
    nodes = {b.get("node") or b["name"] for b in serving}
    return nodes, {b.get("node") or b["name"] for b in serving if b.get("deepspeed")}


class ShardingOptions(forms.Form):
    """Fields shared by SFTForm and RLForm; ``clean_sharding`` is called from their ``clean``."""

    nodes = forms.IntegerField(
        min_value=1, max_value=MAX_NODES, initial=1,
        help_text="Machines of GPUs (the GPUs field) each. More than 1: this job's worker is node 0 and "
        "queues one job per other node on the same GPU queue; their ranks meet at a rendezvous on node 0. "
        "Needs that many live workers on different machines and DATA_DIR on storage they all see.",
    )
    strategy = forms.ChoiceField(
        choices=STRATEGY_CHOICES, initial="ddp",
        help_text="How the ranks share the model. FSDP2 is what fits a 7B model at 32k (docs/training-at-scale.md).",
    )
    offload = forms.BooleanField(required=False, label="CPU offload",
                                 help_text="fsdp / zero3: keep the shards and optimizer state in CPU memory.")

    def clean_sharding(self, data: dict[str, Any], *, rl: bool) -> None:
        gpus, nodes, strategy = data.get("gpus") or 0, data.get("nodes") or 1, data.get("strategy") or "ddp"
        if data.get("offload") and strategy == "ddp":
            self.add_error("offload", "CPU offload shards the model: choose fsdp or zero3, not ddp.")
        elif data.get("offload") and gpus == 0:
            self.add_error("offload", "CPU offload moves the shards between GPU and CPU memory: ask for GPUs.")
        if strategy == "zero3" and rl:
            self.add_error("strategy", "The RL update runs on ddp or fsdp (FSDP2 shards like ZeRO-3); zero3 is for SFT.")
        if strategy != "ddp" and gpus == 0 and not rl:
            self.add_error("strategy", f"SFT with {strategy} runs on GPU workers (accelerate shards on GPUs only): "
                           "ask for GPUs, or choose ddp on a CPU worker.")
        sequence_parallel = data.get("sequence_parallel") or 1
        if sequence_parallel > 1:
            world = max(gpus, 1) * nodes
            if strategy != "fsdp" or gpus == 0 or world % sequence_parallel:
                self.add_error("sequence_parallel", f"Sequence parallelism of {sequence_parallel} runs on fsdp "
                               f"GPUs, over a GPU count it divides (here {gpus} x {nodes} nodes).")
        if nodes > 1 and gpus == 0:
            self.add_error("nodes", "Several nodes train on GPU workers: ask for GPUs per node.")
        elif nodes > 1:
            # node 0's job queues one job per other node on the same GPU queue: as many machines
            # with a live worker on it as nodes, or some node would wait for a worker forever
            queue = gpu_queue(gpus)
            machines, _ = live_nodes(queue)
            if len(machines) < nodes:
                self.add_error("nodes", f"The job asks for {nodes} nodes of {gpus} GPUs; {len(machines)} "
                               f"machine(s) of the fleet have a live worker on queue {queue}.")
        if strategy == "zero3" and not rl:
            queue = gpu_queue(gpus)
            machines, with_deepspeed = live_nodes(queue)
            if not with_deepspeed:
                self.add_error("strategy", f"zero3 needs DeepSpeed on the worker: none of the {len(machines)} live "
                               f"worker machine(s) on queue {queue} has it installed (pip install deepspeed), "
                               "or choose fsdp.")


def sharding_fields_last(form_class: type[forms.Form]) -> type[forms.Form]:
    """The launch page shows the sharding options after the form's own (a class decorator)."""
    mine = [name for name in form_class.base_fields if name not in ShardingOptions.base_fields]
    order = [*mine, *ShardingOptions.base_fields]
    form_class.base_fields = {name: form_class.base_fields[name] for name in order}
    return form_class
