"""The sharded trainer: the RL update (and SFT's launch) on several ranks, with torch's own engines.

Strategies, all torch.distributed (gloo on CPUs, NCCL on GPUs), launched by torchrun:
- ``ddp``: every rank holds the whole model; gradients are averaged (DistributedDataParallel).
- ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``, one unit per decoder layer plus the
  root): parameters, gradients and AdamW's moments are sharded over the ranks, the ZeRO-3 layout.
  Options: CPU offload of the shards (``CPUOffloadPolicy``), bf16 compute with fp32 master weights
  (``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``), activation checkpointing
  (the policy loader's, ``RLSettings.gradient_checkpointing``; for SFT the Trainer's or FSDP's own).
- ``zero3``: DeepSpeed ZeRO-3, for SFT through the HF Trainer's DeepSpeed integration, only on a
  worker where ``deepspeed`` is installed (refused otherwise, with the reason).

``ShardedTrainer`` has LocalTrainer's interface (``start_stage``, ``update``, ``save``, ``.model``),
so ``train_rl`` drives either. It runs in the job's process and starts the ranks once
(``python -m torch.distributed.run ... -m worker.training.sharded_rank FOLDER``); each call is a
command file in FOLDER that global rank 0 reads and broadcasts to every rank, and rank 0 writes
the reply. Every rank runs ``rl_update.train_on_batch`` itself, the very loss of the 1-rank run,
on its part of each minibatch (``RankShard``): the loss of each part is weighted by its share of
the minibatch's tokens, so the averaged gradients are the 1-rank gradients and the parameters
after N steps are the 1-rank parameters to float tolerance (tests/training/test_sharded.py).

Checkpoints: ``save(path)`` writes a plain Hugging Face folder (config + safetensors, for serving
and for any later job) and, beside it in ``path/sharded``, the model and optimizer state as a
torch.distributed.checkpoint (one file per rank, resharded on load), so a retry may resume on a
different number of ranks.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from worker.training.rl_math import LossStats
from worker.training.rl_update import load_model

if TYPE_CHECKING:
    from worker.training.rl import RLSettings, SubTrajectory

STRATEGIES = ("ddp", "fsdp", "zero3")
# Inside a stage checkpoint: the sharded model + optimizer state (torch.distributed.checkpoint).
SHARDED_DIR = "sharded"
# The launch folder shared by the job's process and the ranks.
RANK_FILES = {"spec": "spec.pkl", "log": "torchrun.log", "weights": "policy.pt"}
# Beside the launch files of a run over several nodes: how the other nodes start their ranks.
NODES_FILE = "nodes.json"


class ShardingError(RuntimeError):
    """The sharded run cannot start or go on (an option this worker cannot run, a rank that died)."""


@dataclass(frozen=True)
class Sharding:
    """How the ranks are laid out and what each does.

    ``procs_per_node`` is the ranks on each node: its GPUs on a GPU worker, processes on a CPU one.
    With ``nodes`` > 1 each node's worker starts its own ranks with ``node_rank`` and the same
    ``rdzv_endpoint`` (host:port of node 0), and the launch folder must be on storage every node
    sees (DATA_DIR on a shared file system).
    """

    strategy: str = "fsdp"
    procs_per_node: int = 2
    nodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str = ""
    rdzv_id: str = "klong"
    offload: bool = False  # FSDP2: the shards (and AdamW's state) live in CPU memory between uses
    checkpointing: bool = False  # SFT's activation checkpointing (the RL update: RLSettings.gradient_checkpointing)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ShardingError(f"Unknown strategy {self.strategy!r}: one of {', '.join(STRATEGIES)}.")
        if self.procs_per_node < 1 or self.nodes < 1 or not 0 <= self.node_rank < self.nodes:
            raise ShardingError(f"{self.nodes} nodes x {self.procs_per_node} ranks, node {self.node_rank}: "
                                "needs at least one node and one rank each, and a node rank below the node count.")
        if self.nodes > 1 and not self.rdzv_endpoint:
            raise ShardingError("Several nodes need a rendezvous endpoint (host:port of node 0).")
        if self.offload and self.strategy == "ddp":
            raise ShardingError("CPU offload shards the model: choose fsdp (or zero3), not ddp.")

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node


def visible_gpus() -> int:
    return torch.cuda.device_count()


def training_processes(gpus: int, visible: int, cpu_processes: int) -> int:
    """How many data-parallel ranks to train with; 1 means in the worker's own process."""
    if gpus > 1:
        if visible < gpus:
            raise ValueError(f"The job asks for {gpus} GPUs; this worker has {visible}. Run it on a worker "
                             f"with at least {gpus} GPUs, or ask for fewer.")
        return gpus
    return cpu_processes if visible == 0 else 1


def job_sharding(config: dict[str, Any], processes: int, rdzv_id: str = "klong") -> Sharding | None:
    """The ranks' layout a training job asks for (node 0's, with a rendezvous on this machine when
    it has several nodes); None: train in the worker's own process."""
    strategy, nodes = config.get("strategy", "ddp"), int(config.get("nodes", 1))
    if processes == 1 and strategy == "ddp" and nodes == 1:
        return None
    return Sharding(strategy, procs_per_node=processes, offload=bool(config.get("offload", False)),
                    checkpointing=bool(config.get("checkpointing", False)), nodes=nodes,
                    rdzv_endpoint=rendezvous_endpoint() if nodes > 1 else "", rdzv_id=rdzv_id)


def rendezvous_endpoint() -> str:
    """host:port of a c10d rendezvous on this machine (node 0): its name (or KLONG_RENDEZVOUS_HOST,
    the address the other nodes reach it at) and a port free now."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    return f"{os.environ.get('KLONG_RENDEZVOUS_HOST') or socket.getfqdn()}:{port}"


def write_nodes_file(folder: Path, module: str, sharding: Sharding) -> None:
    """What the other nodes' workers need to start their ranks (``run_node``): the rank module and
    the layout. The folder is on storage every node sees."""
    (folder / NODES_FILE).write_text(json.dumps({"module": module, "sharding": asdict(sharding)}))


def run_node(folder: Path, node_rank: int, should_stop: Callable[[], bool], *, poll_s: float = 0.5,
             wait_s: float = 600.0) -> dict[str, Any]:
    """Node ``node_rank``'s part of a run over several nodes: start its ranks at node 0's rendezvous
    and wait for them. They end with the run (node 0's job asks every rank to stop); a rank that
    fails here fails this node's job with the reason, and node 0's ranks with it."""
    nodes_file = folder / NODES_FILE
    waited = 0.0
    while not nodes_file.exists():  # node 0 writes it once its own ranks are starting
        if should_stop() or waited > wait_s:
            raise ShardingError(f"node 0 never described the run in {nodes_file}")
        time.sleep(poll_s)
        waited += poll_s
    spec = json.loads(nodes_file.read_text())
    sharding = Sharding(**{**spec["sharding"], "node_rank": node_rank})
    log_path = folder / f"torchrun-node-{node_rank}.log"
    ranks = start_ranks(torchrun_command(sharding, spec["module"], folder), log_path)
    try:
        while ranks.poll() is None:
            if should_stop():
                break
            time.sleep(poll_s)
    finally:
        stop_ranks(ranks)
    if ranks.returncode != 0 and not should_stop():
        raise ShardingError(f"node {node_rank}: {failure_reason(log_path, ranks.returncode)}")
    return {"node_rank": node_rank, "ranks": sharding.procs_per_node, "log": str(log_path)}


def rank_identity(device: Any) -> dict[str, Any]:
    """This rank as the job page lists it: global and local rank, host, pid, device."""
    return {"rank": int(os.environ.get("RANK", "0")), "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
            "host": socket.gethostname(), "pid": os.getpid(), "device": str(device)}


def describe_ranks(ranks: Sequence[dict[str, Any]], strategy: str) -> str:
    return f"{len(ranks)} ranks ({strategy}): " + ", ".join(
        f"rank {r['rank']} on {r['host']} ({r['device']}, pid {r['pid']})" for r in ranks)


def deepspeed_installed() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def check_strategy(strategy: str, *, rl: bool) -> None:
    """Refuse, with the reason, a strategy this worker cannot run."""
    if strategy != "zero3":
        return
    if not deepspeed_installed():
        raise ShardingError("zero3 needs DeepSpeed, which is not installed on this worker (pip install deepspeed); "
                            "fsdp shards parameters, gradients and optimizer state the same way with torch alone.")
    if rl:
        # DeepSpeed's engine owns backward and the optimizer step, which train_on_batch does itself.
        raise ShardingError("The RL update runs on ddp or fsdp (FSDP2 is ZeRO-3's layout); zero3 is for SFT.")


def torchrun_command(sharding: Sharding, module: str, folder: Path) -> list[str]:
    """The torchrun command line of this node's ranks: standalone on one node, a c10d rendezvous over several."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={sharding.procs_per_node}"]
    if sharding.nodes == 1:
        command.append("--standalone")
    else:
        command += [f"--nnodes={sharding.nodes}", f"--node_rank={sharding.node_rank}", "--rdzv_backend=c10d",
                    f"--rdzv_endpoint={sharding.rdzv_endpoint}", f"--rdzv_id={sharding.rdzv_id}"]
    return [*command, "-m", module, str(folder)]


def start_ranks(command: list[str], log_path: Path) -> subprocess.Popen:
    """torchrun in a process group of its own: ``stop_ranks`` ends it and every rank with it."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    with open(log_path, "w") as log:
        return subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop_ranks(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def leave_process_group() -> None:
    """Join the ranks, then tear the process group down before the interpreter does.

    Left to interpreter shutdown, a gloo process group's worker threads can be destroyed while
    still joinable: the rank dies with "terminate called without an active exception" (SIGABRT)
    after a run that finished, and torchrun reports the whole job failed.
    """

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _failures(summary: str) -> list[dict[str, Any]]:
    """The failed ranks of torchrun's summary, root cause first: rank, exit code, traceback lines."""
    blocks: list[dict[str, Any]] = []
    for part in re.split(r"^\[\d+\]:\s*$", summary, flags=re.M)[1:]:
        block: dict[str, Any] = {"trace": []}
        for line in part.splitlines():
            if line.startswith(("=", "-")) or line.startswith("Root Cause"):
                break
            key, _, value = line.partition(":")
            if block["trace"] or key.strip() == "traceback":
                block["trace"].append(value.strip() if not block["trace"] else line.strip())
            elif key.strip() in ("rank", "exitcode"):
                block[key.strip()] = value.strip().split(" ")[0]
        if block.get("rank") and block.get("exitcode", "").lstrip("-").isdigit():
            blocks.append(block)
    root = summary.rsplit("Root Cause", 1)[-1]
    return sorted(blocks, key=lambda b: f"rank      : {b['rank']}" not in root)


def failure_reason(log_path: Path, returncode: int | None) -> str:
    """Which rank failed and how, from torchrun's summary (with ``@record``, a rank's exception),
    and the end of every rank's output. A rank killed by a signal is the cause when there is one: the
    others then fail in a collective ("Connection closed by peer"), sometimes a moment earlier."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    summary = text[text.rfind("Failures:"):] if "Failures:" in text else ""
    failures = _failures(summary)
    killed = [f for f in failures if int(f["exitcode"]) < 0]
    if failures:
        failure = (killed or failures)[0]
        number = int(failure["exitcode"])
        if number < 0 and -number in {s.value for s in signal.Signals}:
            how = f"killed by {signal.Signals(-number).name}"
        else:
            exception = next((t for t in reversed(failure["trace"]) if t and not t.startswith("To enable traceback")), "")
            how = f"exit code {number}" + (f": {exception}" if exception else "")
        head = f"rank {failure['rank']} failed ({how})"
    else:
        head = f"the ranks stopped (torchrun exit status {returncode})"
    return f"{head}; every rank's output: {log_path}\n{text[-3000:]}"


def read_reply(folder: Path, number: int, process: subprocess.Popen, poll_s: float) -> Any:
    """Wait for rank 0's reply to command ``number``; a rank that dies fails the call with the reason."""
    reply = folder / f"reply-{number}.pkl"
    while not reply.exists():
        if process.poll() is not None:
            raise ShardingError(failure_reason(folder / RANK_FILES["log"], process.returncode))
        time.sleep(poll_s)
    with open(reply, "rb") as f:
        return pickle.load(f)  # noqa: S301 (written by our own rank 0, in this job's folder)


def write_atomic(path: Path, value: Any) -> None:
    """Pickle ``value`` to ``path`` so a reader polling for the file never sees half of it."""
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as f:
        pickle.dump(value, f)
    os.replace(part, path)


class ShardedTrainer:
    """LocalTrainer's interface, on ``sharding.world_size`` ranks (see the module docstring).

    ``model`` is a full copy of the policy in this process (on the CPU), refreshed after every
    update from rank 0's gathered weights: what ``train_rl`` publishes to the rollouts.
    """

    rank_module = "worker.training.sharded_rank"  # what each rank runs (bench/ swaps in a naive loss)

    def __init__(self, settings: RLSettings, tokenizer: Any, sharding: Sharding, *, folder: Path | None = None,
                 poll_s: float = 0.05) -> None:
        check_strategy(sharding.strategy, rl=True)
        if sharding.offload and not torch.cuda.is_available():
            raise ShardingError("CPU offload moves the shards between GPU and CPU memory: this worker has no GPU.")
        self.settings = settings
        self.tokenizer = tokenizer
        self.sharding = sharding
        self.poll_s = poll_s
        self.folder = Path(folder or Path(settings.output_dir) / "ranks")
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in [*self.folder.glob("cmd-*"), *self.folder.glob("reply-*")]:
            old.unlink()
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        write_atomic(self.folder / RANK_FILES["spec"],
                     {"settings": settings, "sharding": sharding, "pad_id": pad_id, "driver_pid": os.getpid()})
        self.process = start_ranks(torchrun_command(sharding, self.rank_module, self.folder),
                                   self.folder / RANK_FILES["log"])
        self.model: Any = None
        self._calls = 0

    def _call(self, op: str, **args: Any) -> Any:
        number = self._calls
        self._calls += 1
        write_atomic(self.folder / f"cmd-{number}.pkl", (op, args))
        try:
            return read_reply(self.folder, number, self.process, self.poll_s)
        except BaseException:
            self.close(wait=False)
            raise

    def start_stage(self, path: str | Path, *, with_optimizer: bool) -> None:
        self._call("start", path=str(path), with_optimizer=with_optimizer)
        # the rollouts' copy: frozen, as the ranks load it (bf16 storage under precision=bf16)
        self.model = load_model(path, "cpu", precision=self.settings.precision, lora=self.settings.lora,
                                trainable=False)

    def update(self, subs: Sequence[SubTrajectory]) -> LossStats | None:
        reply = self._call("update", subs=list(subs))
        if reply["weights"]:
            state = torch.load(reply["weights"], map_location="cpu", weights_only=True)
            self.model.load_state_dict(state)
        return reply["stats"]

    def save(self, path: Path) -> None:
        self._call("save", path=str(path))
        self.tokenizer.save_pretrained(path)

    def ranks(self) -> list[dict[str, Any]]:
        """Every rank: its global number, node, pid and device (what the job page lists)."""
        return self._call("ranks")

    def close(self, *, wait: bool = True) -> None:
        """Stop the ranks: asked to leave after their last command, else (or after 30 s) killed."""
        if wait and self.process.poll() is None:
            write_atomic(self.folder / f"cmd-{self._calls}.pkl", ("stop", {}))
            self._calls += 1
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        stop_ranks(self.process)

    def __enter__(self) -> ShardedTrainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(wait=exc[0] is None)
